"""Loss schedules: how much weight reconstruction and interaction loss get at each epoch.

Epochs are counted from 0. ``alpha(epoch)`` is the weight on the reconstruction loss; for the
standard schedules ``weights(epoch) == (alpha, 1 - alpha)``. A user-defined schedule is one small
class::

    @register_schedule
    class Cosine(Schedule):
        def alpha(self, epoch):
            ...

after which ``get_schedule("Cosine", transition_epoch)`` (params files, widgets) finds it.
"""

from __future__ import annotations

from typing import Callable

from dango_nb.errors import shown

__all__ = [
    "Schedule", "PreThenPost", "LinearUntilUniform", "LinearUntilFlipped", "PaperTwoStage",
    "InteractionOnly", "SCHEDULES", "register_schedule", "get_schedule",
]

SCHEDULES: dict[str, type["Schedule"]] = {}


def register_schedule(cls: type | None = None, *, name: str | None = None) -> Callable | type:
    """Class decorator adding a :class:`Schedule` subclass to :data:`SCHEDULES` under ``name``
    (default: the class name). Usable as ``@register_schedule`` or ``@register_schedule(name=...)``."""

    def wrap(c: type) -> type:
        if not (isinstance(c, type) and issubclass(c, Schedule)):
            raise TypeError(f"{shown(c)} is not a subclass of Schedule")
        key = name or c.__name__
        if key in SCHEDULES and SCHEDULES[key] is not c:
            raise ValueError(f"a schedule named {shown(key)} is already registered ({shown(SCHEDULES[key])})")
        SCHEDULES[key] = c
        return c

    return wrap if cls is None else wrap(cls)


class Schedule:
    """Base class. Subclasses implement :meth:`alpha`; override :meth:`weights` when the two weights
    do not sum to one (see :class:`PaperTwoStage`).

    Args:
        transition_epoch (int): the epoch ``T`` at which the schedule reaches its final state.
    """

    def __init__(self, transition_epoch: int = 10):
        if int(transition_epoch) != transition_epoch or transition_epoch < 0:
            raise ValueError(f"transition_epoch must be a non-negative integer, got {shown(transition_epoch)}")
        self.transition_epoch = int(transition_epoch)

    def alpha(self, epoch: int) -> float:
        """Weight on the reconstruction loss at ``epoch`` (0-based)."""
        raise NotImplementedError

    def weights(self, epoch: int) -> tuple[float, float]:
        """``(w_rec, w_int)`` at ``epoch``; total loss = w_rec * L_rec + w_int * L_int."""
        a = float(self.alpha(epoch))
        return a, 1.0 - a

    @property
    def name(self) -> str:
        for key, cls in SCHEDULES.items():
            if cls is type(self):
                return key
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transition_epoch={self.transition_epoch})"


@register_schedule
class PreThenPost(Schedule):
    """Reconstruction only before ``T``, interaction only from ``T`` on: alpha = 1 if epoch < T else 0."""

    def alpha(self, epoch: int) -> float:
        return 1.0 if epoch < self.transition_epoch else 0.0


@register_schedule
class LinearUntilUniform(Schedule):
    """alpha falls linearly from 1 to 0.5 over ``T`` epochs, then stays at 0.5."""

    def alpha(self, epoch: int) -> float:
        if epoch < self.transition_epoch:
            return 1.0 - 0.5 * epoch / self.transition_epoch
        return 0.5


@register_schedule
class LinearUntilFlipped(Schedule):
    """alpha falls linearly from 1 to 0 over ``T`` epochs, then stays at 0."""

    def alpha(self, epoch: int) -> float:
        if epoch < self.transition_epoch:
            return 1.0 - epoch / self.transition_epoch
        return 0.0


@register_schedule
class PaperTwoStage(Schedule):
    """The original DANGO recipe: reconstruction only for ``T`` epochs, then the interaction loss plus
    ``rec_weight`` (0.001) times reconstruction. Weights are ``(1, 0)`` then ``(rec_weight, 1)``; alpha
    is reported as ``rec_weight`` in the second stage (the weights do not sum to one there)."""

    def __init__(self, transition_epoch: int = 10, rec_weight: float = 0.001):
        super().__init__(transition_epoch)
        self.rec_weight = float(rec_weight)

    def alpha(self, epoch: int) -> float:
        return 1.0 if epoch < self.transition_epoch else self.rec_weight

    def weights(self, epoch: int) -> tuple[float, float]:
        if epoch < self.transition_epoch:
            return 1.0, 0.0
        return self.rec_weight, 1.0

    def __repr__(self) -> str:
        return f"PaperTwoStage(transition_epoch={self.transition_epoch}, rec_weight={self.rec_weight})"


@register_schedule
class InteractionOnly(Schedule):
    """alpha = 0 at every epoch: the "DANGO without pre-training" ablation (``T`` is ignored)."""

    def alpha(self, epoch: int) -> float:
        return 0.0


def get_schedule(name: str, transition_epoch: int = 10, **kwargs) -> Schedule:
    """Instantiate the schedule registered as ``name``; unknown names raise ``KeyError`` listing the
    known ones."""
    if isinstance(name, Schedule):
        return name
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise KeyError(f"unknown schedule {shown(name)}; known schedules: {', '.join(sorted(SCHEDULES))}") from None
    return cls(transition_epoch, **kwargs)
