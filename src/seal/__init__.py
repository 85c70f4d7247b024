"""seal: Self-Adapting Language Models (Zweiger et al., 2025) that run on a laptop CPU and scale out.

The Python entry points, as the command line uses them::

    import seal

    summary = seal.run_eval(seal.EvalConfig(condition="self-edit", n_passages=10), "runs/self-edit")

    model = seal.SelfAdaptingModel(state="runs/my-knowledge")  # what `seal serve` serves
    model.learn("Zoberra cake is a dessert from the island of Pellesh.", title="Zoberra cake")
    print(model.ask("Where is Zoberra cake from?"))
"""

from seal.commands import register, standard_commands
from seal.domain import Domain, Queries, Rejection, Score, Update
from seal.domains.arc.evaluate import ArcEvalConfig, run_arc_eval, run_arc_train
from seal.domains.knowledge.continual import run_continual
from seal.domains.knowledge.data import demo_data_path
from seal.domains.knowledge.evaluate import EvalConfig, run_eval
from seal.domains.knowledge.train import KnowledgeTrainConfig, run_train
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig, TrainingExample
from seal.executors import ExecutorSpec, make_executor
from seal.loops.conditions import SelfEditCondition, SelfEditEvalConfig, run_condition, train_policy
from seal.loops.continual import ContinualConfig
from seal.loops.restem import RestEMConfig
from seal.models import load_model
from seal.serving.config import ServeConfig
from seal.serving.model import SelfAdaptingModel

__version__ = "0.1.0"
__all__ = [
    "ArcEvalConfig",
    "ContinualConfig",
    "Domain",
    "EvalConfig",
    "ExecutorSpec",
    "KnowledgeTrainConfig",
    "LoraBank",
    "LoraConfig",
    "Queries",
    "Rejection",
    "RestEMConfig",
    "SamplingConfig",
    "Score",
    "SelfEditCondition",
    "SelfEditEvalConfig",
    "SelfAdaptingModel",
    "ServeConfig",
    "TrainConfig",
    "TrainingExample",
    "Update",
    "demo_data_path",
    "load_model",
    "make_executor",
    "register",
    "run_arc_eval",
    "run_arc_train",
    "run_condition",
    "run_continual",
    "run_eval",
    "run_train",
    "standard_commands",
    "train_policy",
]
