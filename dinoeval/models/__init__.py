"""Checkpoint reading and backbone building."""

from dinoeval.models.backbone import Backbone, backbone_from_raw
from dinoeval.models.checkpoints import (
    RawCheckpoint,
    UnsafeCheckpointError,
    file_hash,
    read_checkpoint,
    split_checkpoint,
)
from dinoeval.models.head import DINOHead, head_from_state_dict
from dinoeval.models.load import load_backbone
from dinoeval.models.vit import ViTArch, build_vit, infer_arch, load_vit, parse_arch_name

__all__ = [
    "Backbone", "DINOHead", "RawCheckpoint", "UnsafeCheckpointError", "ViTArch",
    "backbone_from_raw", "build_vit", "file_hash", "head_from_state_dict", "infer_arch",
    "load_backbone", "load_vit", "parse_arch_name", "read_checkpoint", "split_checkpoint",
]
