"""The allowed ranges of QC's settings, as types: ``erc.settings.validate`` refuses a value
outside them (a cosine threshold of 7, a negative duration, NaN) with an error naming the
setting, before any decision is made on it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Similarity = Annotated[float, Field(ge=-1, le=1)]  # a cosine similarity
Gap = Annotated[float, Field(ge=0, le=2)]  # a difference of two cosine similarities
Share = Annotated[float, Field(ge=0, le=1)]  # a share, score or probability
Chance = Annotated[float, Field(gt=0, lt=1)]  # a probability a test is run at
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Seconds = NonNegative
Finite = Annotated[float, Field(allow_inf_nan=False)]
Spread = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # robust sds, a log width
Words = Annotated[int, Field(ge=0)]  # a count that may be zero
AtLeastOne = Annotated[int, Field(ge=1)]
