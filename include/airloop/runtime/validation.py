"""Data validation with Great Expectations, the suite built from the project spec.

:class:`Validator` builds one ephemeral GX context and suite per ingest run and
validates each landing batch against it. Values are coerced to the spec's types first
(an unparseable number or timestamp becomes null instead of crashing the reader, and
is reported as ``expect_column_values_to_be_parseable`` with the original value;
fractional values in integer columns as ``expect_column_values_to_be_integers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig


@dataclass
class Outcome:
    success: bool
    rows: int
    failures: list[dict[str, Any]] = field(default_factory=list)


def coerce(frame, spec):
    """Cast columns to the spec's types (bad values → null); unknown columns stay."""
    out = frame.copy()
    if spec.timestamp in out:
        out[spec.timestamp] = pd.to_datetime(out[spec.timestamp], utc=True, errors="coerce")
    for name in (spec.entity_key, spec.label):
        if name in out and not (name == spec.entity_key and spec.entity_dtype == "string"):
            out[name] = pd.to_numeric(out[name], errors="coerce")
    for col in spec.columns:
        if col.name not in out:
            continue
        if col.dtype in ("int64", "float64"):
            out[col.name] = pd.to_numeric(out[col.name], errors="coerce")
        else:
            out[col.name] = out[col.name].astype("string").astype(object)
            out.loc[out[col.name].isna(), col.name] = None
    return out


def expectations(spec) -> list:
    """The GX expectations a landing batch must meet, derived from the spec."""
    e = gx.expectations
    columns = [spec.entity_key, spec.timestamp, *[c.name for c in spec.columns], spec.label]
    out = [
        e.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
        e.ExpectTableRowCountToBeBetween(min_value=spec.data.min_rows),
        e.ExpectColumnValuesToNotBeNull(column=spec.entity_key),
        e.ExpectColumnValuesToNotBeNull(column=spec.timestamp),
        e.ExpectColumnValuesToNotBeNull(column=spec.label),
        e.ExpectColumnValuesToBeInSet(column=spec.label, value_set=[0, 1]),
    ]
    for col in spec.columns:
        if not col.nullable:
            out.append(e.ExpectColumnValuesToNotBeNull(column=col.name))
        if col.min is not None or col.max is not None:
            out.append(
                e.ExpectColumnValuesToBeBetween(
                    column=col.name, min_value=col.min, max_value=col.max
                )
            )
        if col.allowed:
            out.append(e.ExpectColumnValuesToBeInSet(column=col.name, value_set=list(col.allowed)))
    return out


class Validator:
    """One GX context and suite, many batches."""

    def __init__(self, spec):
        self.spec = spec
        self.context = gx.get_context(mode="ephemeral")
        # no tqdm bars in task logs
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self.context.data_sources.add_pandas(name=f"{spec.name}_landing")
        asset = source.add_dataframe_asset(name="batch")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self.suite = self.context.suites.add(gx.ExpectationSuite(name=f"{spec.name}_landing"))
        for expectation in expectations(spec):
            self.suite.add_expectation(expectation)

    def validate(self, frame, raw=None) -> Outcome:
        """Validate ``frame`` (already :func:`coerce`-d); ``raw`` is the frame as read,
        to report values the coercion could not parse."""
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(self.suite)
        failures = []
        for r in result.results:
            if r.success:
                continue
            cfg = r.expectation_config
            detail = r.result or {}
            failures.append(
                {
                    "expectation": cfg.type,
                    "column": cfg.kwargs.get("column"),
                    "kwargs": {
                        k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")
                    },
                    "unexpected_count": detail.get("unexpected_count"),
                    "unexpected_sample": [
                        str(v) for v in (detail.get("partial_unexpected_list") or [])[:5]
                    ],
                    "observed": str(detail.get("observed_value"))[:200]
                    if "observed_value" in detail
                    else None,
                    "exception": (r.exception_info or {}).get("exception_message")
                    if r.exception_info and r.exception_info.get("raised_exception")
                    else None,
                }
            )
        _explain_missing_columns(failures, frame, self.spec)
        extra = integer_failures(frame, self.spec)
        if raw is not None:
            extra = parse_failures(raw, frame, self.spec) + extra
        failures.extend(extra)
        success = bool(result.success) and not extra
        return Outcome(success=success, rows=len(frame), failures=failures)


def _explain_missing_columns(failures: list[dict[str, Any]], frame, spec) -> None:
    """Say which columns are missing or unexpected, and put table-level failures first.

    GX reports the column-set mismatch as two lists and a missing column's value
    expectations with no detail at all; the errors file should name the column.
    """
    expected = [spec.entity_key, spec.timestamp, *[c.name for c in spec.columns], spec.label]
    missing = [c for c in expected if c not in frame.columns]
    unexpected = [str(c) for c in frame.columns if c not in expected]
    for f in failures:
        if f["expectation"] == "expect_table_columns_to_match_set":
            f.update(missing=missing, unexpected=unexpected,
                     observed=f"missing {missing}, unexpected {unexpected}")
        elif f.get("column") in missing and not f.get("observed"):
            f["observed"] = "column missing from the file"
    failures.sort(key=lambda f: f.get("column") is not None)  # stable: suite order otherwise


def integer_failures(frame, spec) -> list[dict[str, Any]]:
    """Fractional values in integer columns (GX has no pandas "is integral" check).

    Without it ``3.5`` in an ``int64`` column would pass the range checks and be
    truncated to ``3`` when the dataset is typed.
    """
    columns = [c.name for c in spec.columns if c.dtype == "int64"]
    if spec.entity_dtype == "int64":
        columns.insert(0, spec.entity_key)
    out = []
    for name in columns:
        if name not in frame:
            continue
        values = frame[name]
        bad = values[values.notna() & (values % 1 != 0)]
        if len(bad):
            out.append(
                {
                    "expectation": "expect_column_values_to_be_integers",
                    "column": name,
                    "kwargs": {},
                    "unexpected_count": int(len(bad)),
                    "unexpected_sample": [str(v) for v in bad.head(5)],
                    "observed": None,
                    "exception": None,
                }
            )
    return out


def parse_failures(raw, frame, spec) -> list[dict[str, Any]]:
    """Values present in the file that :func:`coerce` could not parse to the spec's type.

    Reported even for nullable columns, where the not-null expectation would not see
    them: an unparseable value must never turn into a silent null.
    """
    typed = [spec.timestamp, spec.label]
    if spec.entity_dtype != "string":
        typed.insert(0, spec.entity_key)
    typed += [c.name for c in spec.columns if c.dtype != "string"]
    out = []
    for name in typed:
        if name not in raw or name not in frame:
            continue
        bad = raw[name][raw[name].notna() & frame[name].isna()]
        if len(bad):
            out.append(
                {
                    "expectation": "expect_column_values_to_be_parseable",
                    "column": name,
                    "kwargs": {"type": "timestamp" if name == spec.timestamp else "number"},
                    "unexpected_count": int(len(bad)),
                    "unexpected_sample": [str(v) for v in bad.head(5)],
                    "observed": None,
                    "exception": None,
                }
            )
    return out
