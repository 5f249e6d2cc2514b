"""The method's constants: settings a command resolves, in one place."""

from __future__ import annotations

import pytest

from models.config import MethodConfig


@pytest.mark.parametrize(
    ("configured", "mine", "evaluate"),
    [(None, True, False), (True, True, False), (False, False, False)],
    ids=["unset", "on", "off"],
)
def test_frame_gating_is_on_for_mining_unless_turned_off_and_always_off_for_evaluation(
    configured: bool | None, mine: bool, evaluate: bool
) -> None:
    method = MethodConfig(frame_gating=configured)
    assert method.for_command("mine").frame_gating is mine
    assert method.for_command("evaluate").frame_gating is evaluate
    # nothing else changes, and the config itself is left as it was
    assert method.for_command("mine").model_dump(exclude={"frame_gating"}) == method.model_dump(
        exclude={"frame_gating"}
    )
    assert method.frame_gating is configured


def test_weight_files_name_each_file_the_models_read_by_role() -> None:
    from models.config import Mask2FormerConfig, ModelsConfig, SamConfig

    models = ModelsConfig(
        mask2former=Mask2FormerConfig(format="huggingface", checkpoint="m2f/"),
        sam=SamConfig(model_type="vit_b", checkpoint="sam.pth"),
        method=MethodConfig(ignore_mask="ego.png"),
    )
    assert models.weight_files() == {
        "mask2former": "m2f/",
        "sam": "sam.pth",
        "ignore_mask": "ego.png",
    }
    assert ModelsConfig().weight_files() == {}  # random weights, no ignore mask


def test_the_configs_model_names_are_exactly_the_built_architectures() -> None:
    from typing import get_args

    from models.config import Mask2FormerArchitecture, SamModelType
    from models.mask2former import ARCHITECTURES
    from models.sam import SAM_ARCHITECTURES

    # the command line offers the config's names without loading the models
    assert set(get_args(SamModelType)) == set(SAM_ARCHITECTURES)
    assert set(get_args(Mask2FormerArchitecture)) == set(ARCHITECTURES)
