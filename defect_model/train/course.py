"""Where a run is heading: its planned epochs (re-planned once for a time budget), its best epoch, when it stops
early, and what an engineer should hear when it is still failing."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from defect_model.common.config import MAX_EPOCHS, TrainConfig

# A run still near chance, or blind to a class, after this share of its epochs is called out while it runs.
WARN_AFTER = 0.3
# Share of the planned epochs after which a plateau may end a run that is not perfect.
SETTLED_SHARE = 0.8
# A validation macro-F1 this high cannot improve further in any way that matters.
PERFECT = 0.999
# Past the budget by more than this share, a run stops after the epoch it is in instead of starting another.
BUDGET_SLACK = 0.05
# A run told to train until usable goes on, one epoch at a time, up to this many times its planned epochs.
USABLE_LIMIT = 4


@dataclass
class Course:
    """Where a run is heading: its planned epochs (re-planned once for a time budget) and its best epoch."""

    epochs: int
    best: float = -1.0
    best_epoch: int = 0
    since_best: int = 0
    replanned: bool = False
    warned: bool = False

    def record(self, epoch: int, macro_f1: float) -> bool:
        """Note a finished epoch's score; True when it is the best so far."""
        if macro_f1 > self.best:
            self.best, self.best_epoch, self.since_best = macro_f1, epoch, 0
            return True
        self.since_best += 1
        return False

    def stop_reason(self, cfg: TrainConfig, elapsed: float, epoch_seconds: float, epoch: int,
                    usable: bool = True) -> str | None:
        """Why the run stops after `epoch` before its planned end, or None to go on (always, for a run told to
        train until usable whose model is not yet)."""
        if epoch >= self.epochs or (cfg.until_usable and not usable):
            return None
        # While the learning rate is high validation scores wobble, and a cosine's low-rate end is where they
        # gain most (ELPV: a stop after 10 of 13 epochs kept macro-F1 0.43): a plateau counts only in the last
        # fifth of the plan, or at once when the score cannot get better.
        settled = epoch >= SETTLED_SHARE * self.epochs or self.best >= PERFECT
        if cfg.patience and self.since_best >= cfg.patience and settled:
            return (f"stopped early after epoch {epoch}: validation macro-F1 has not improved for {self.since_best} "
                    f"epochs (best {self.best:.3f} at epoch {self.best_epoch})")
        budget = cfg.time_budget_min * 60
        if budget and elapsed + epoch_seconds > budget * (1 + BUDGET_SLACK):
            return (f"stopped after epoch {epoch} of {self.epochs}: another epoch ({epoch_seconds:.0f} s) would "
                    f"overrun the budget of {cfg.time_budget_min:g} min (the machine is slower than measured)")
        return None

    def state(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict, epochs: int) -> "Course":
        saved = state.get("course") or {"epochs": epochs, "best": state.get("best_macro_f1", -1.0)}
        return cls(**saved)


def budget_epochs(budget_s: float, elapsed: float, epochs_done: int, epoch_seconds: float) -> int:
    """Epochs a run can finish within `budget_s`, measured after `epochs_done` epochs took `elapsed` seconds."""
    more = math.floor(max(0.0, budget_s - elapsed) / max(epoch_seconds, 1e-3))
    return max(epochs_done, min(MAX_EPOCHS, epochs_done + more))


def early_warning(quality, epoch: int, epochs: int, cfg: TrainConfig) -> str:
    """What an engineer watching a run should know when it is still failing after a fair part of its time."""
    advice = ["check that the photos of " + quality.worst_class + " are labelled right and that there are enough "
              "of them"]
    if cfg.image_size < 224:
        advice.append(f"small defects may vanish at {cfg.image_size} px: try a larger image size")
    if cfg.loss_weighting == "none" and cfg.sampling == "shuffle":
        advice.append("weight the loss by class (loss weighting sqrt) if some classes are rare")
    kept = " The best epoch so far is kept." if cfg.keep_best else ""
    return (f"After epoch {epoch} of {epochs} this run still " + "; ".join(quality.problems)
            + f". It keeps training (early epochs of a from-scratch network are often like this).{kept} "
            "If it does not improve: " + "; ".join(advice) + ".")
