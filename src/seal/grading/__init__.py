"""Grading of closed-book QA answers: offline rules, an LLM judge, and calibration."""

from seal.grading.base import Grader, GradeRequest, Verdict
from seal.grading.calibration import CalibrationStats, calibrate, load_graded
from seal.grading.judge import JudgeError, JudgeGrader, JudgeUnreachableError, VerdictCache
from seal.grading.offline import OfflineGrader

__all__ = [
    "CalibrationStats",
    "GradeRequest",
    "Grader",
    "JudgeError",
    "JudgeGrader",
    "JudgeUnreachableError",
    "VerdictCache",
    "OfflineGrader",
    "Verdict",
    "calibrate",
    "load_graded",
]
