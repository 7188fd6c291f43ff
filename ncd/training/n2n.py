"""The N2N reward (Ashok et al. 2017) for the policies of specs/n2n_policy.ncd.

R = R_c · R_a with R_c = C (2 − C), C = 1 − #params(student) / #params(teacher) the compression
(R_c rises steeply near C = 0 and flattens at C = 1), and R_a = acc_s / acc_t the student's
accuracy relative to the teacher's. The paper gives a reward of −1 to a student that is not a
valid network, which `reward` leaves to the caller.
"""
from __future__ import annotations


def compression(student_params: int, teacher_params: int) -> float:
    """C = 1 − #params_s / #params_t."""
    if teacher_params <= 0:
        raise ValueError(f"the teacher must have parameters, got {teacher_params}")
    return 1.0 - student_params / teacher_params


def reward(student_params: int, teacher_params: int, student_acc: float, teacher_acc: float) -> float:
    """R = C (2 − C) · acc_s / acc_t."""
    if teacher_acc <= 0:
        raise ValueError(f"the teacher's accuracy must be positive, got {teacher_acc}")
    c = compression(student_params, teacher_params)
    return c * (2.0 - c) * student_acc / teacher_acc
