"""Attention analysis (paper section 5): record SK attention by unit, enlarge objects, summarise, plot."""

from sknet.analysis.attention import (
    AttentionRecorder,
    channel_profile,
    last_unit_per_stage,
    mean_attention_difference,
    parse_unit_name,
    record_attention,
    sk_units,
)
from sknet.analysis.scale import enlarge_center
from sknet.analysis.study import ScaleStudy, default_profile_unit, run_scale_study

__all__ = [
    "AttentionRecorder",
    "ScaleStudy",
    "channel_profile",
    "default_profile_unit",
    "enlarge_center",
    "last_unit_per_stage",
    "mean_attention_difference",
    "parse_unit_name",
    "record_attention",
    "run_scale_study",
    "sk_units",
]
