"""FiftyOne App plugin: one button per review tag above the sample grid.

``ugains review app`` points FiftyOne's plugin directory here. Each button tags the selected
detections (or, with none selected, the selected frames or patches) through
:func:`pipelines.review.decisions.apply_review_tag`, so a click and ``export``/``pool`` agree
on the vocabulary.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from pipelines.review.decisions import apply_review_tag
from pipelines.review.fields import REVIEW_TAGS, ReviewError

_HINTS = {
    "confirmed": "a real rare object: goes to export and to the outlier pool",
    "rejected": "a false positive (texture, shadow, in-distribution object)",
    "relabel": "a real object whose mask or box needs fixing",
}


def _review_operator(tag):
    class ReviewTag(foo.Operator):
        @property
        def config(self):
            return foo.OperatorConfig(
                name=f"review_{tag}",
                label=f"Review: {tag}",
                description=f"Tag the selection {tag}: {_HINTS[tag]}",
            )

        def resolve_placement(self, ctx):
            return types.Placement(
                types.Places.SAMPLES_GRID_ACTIONS,
                types.Button(label=tag, prompt=False, description=_HINTS[tag]),
            )

        def execute(self, ctx):
            try:
                decision = apply_review_tag(
                    ctx.view, tag, sample_ids=ctx.selected, labels=ctx.selected_labels
                )
            except ReviewError as error:
                ctx.ops.notify(str(error), variant="warning")
                return {"tagged": 0}
            ctx.ops.notify(str(decision), variant="success")
            ctx.ops.reload_dataset()
            return {"tagged": decision.count}

    ReviewTag.__name__ = f"Review{tag.capitalize()}"
    return ReviewTag


def register(plugin):
    for tag in REVIEW_TAGS:
        plugin.register(_review_operator(tag))
