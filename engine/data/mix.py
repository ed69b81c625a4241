"""Mixing sources by domain (seed 001 "Plan C": 50:50 within a domain, 4:3:3 across domains, a total size, small
sources oversampled).

A mix draws from pools: the rows of each source in one split (`from: train`), or the unsplit sources. Its units
are (source, domain) pairs. Each unit's share of the mix is the domain's weight times the source's weight inside
the domain (`within`: `equal`, `natural` = by rows, or source -> weight; sources left out of a weight mapping are
not drawn). Counts are rounded twice with largest remainders (domains from `size`, then units from their domain's
count), so achieved ratios are within 1/size of the requested ones.

A unit that needs more rows than it has is oversampled when `oversample` is on: every row is taken
floor(count / rows) times and a seeded sample without replacement fills the rest, so no row is drawn twice more
than another; the factor and the number of unique rows are recorded. Without oversampling such a mix is an error
that says what would fit. Each unit draws from its own seeded generator (mix seed, source, domain), so adding a
source does not change what the others draw; the mixed rows are then shuffled with the mix seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

from engine.data.sources import DataError
from engine.recipe.errors import did_you_mean


@dataclass
class Unit:
    source: str
    domain: str
    available: int


@dataclass
class UnitPlan:
    unit: Unit
    share: float        # requested share of the whole mix
    rows: int = 0       # rows drawn

    @property
    def factor(self) -> float:
        return self.rows / self.unit.available if self.unit.available else 0.0

    @property
    def unique(self) -> int:
        return min(self.rows, self.unit.available)


def _largest_remainder(total: int, weights: dict[Any, float]) -> dict[Any, int]:
    weight = sum(weights.values())
    if weight <= 0:
        return {k: 0 for k in weights}
    raw = {k: total * w / weight for k, w in weights.items()}
    counts = {k: int(r) for k, r in raw.items()}
    order = list(weights)
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), order.index(k)))[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def plan_mix(units: list[Unit], mix: Any, name: str) -> tuple[list[UnitPlan], list[str]]:
    """The rows each unit contributes, and warnings (units left out). Raises DataError when unsatisfiable."""
    warnings: list[str] = []
    bad = {d: w for d, w in mix.domains.items() if w <= 0}
    if bad or not mix.domains:
        raise DataError(f"mix '{name}': domain weights must be positive (got {mix.domains})")
    sources = sorted({u.source for u in units})
    if isinstance(mix.within, dict):
        for source, w in mix.within.items():
            if source not in sources:
                hint = did_you_mean(source, sources)
                raise DataError(f"mix '{name}': `within` names '{source}', which is not a source of this mix "
                                f"(sources: {', '.join(sources) or 'none'})" + (f"; {hint}" if hint else ""))
            if w < 0:
                raise DataError(f"mix '{name}': `within` weight of '{source}' must not be negative")
    by_domain: dict[str, list[Unit]] = {}
    for u in units:
        if u.domain not in mix.domains:
            hint = " (its rows have no domain: set `domain:` on the source)" if u.domain == "none" else ""
            warnings.append(f"mix '{name}': {u.available} rows of source '{u.source}' (domain '{u.domain}') are not "
                            f"mixed: domain '{u.domain}' is not in `domains`{hint}")
            continue
        if isinstance(mix.within, dict) and not mix.within.get(u.source):
            warnings.append(f"mix '{name}': source '{u.source}' is not drawn (not weighted in `within`)")
            continue
        by_domain.setdefault(u.domain, []).append(u)
    present = sorted({u.domain for u in units})
    for domain in mix.domains:
        if not by_domain.get(domain):
            raise DataError(f"mix '{name}': unsatisfiable ratios: domain '{domain}' has no source to draw from "
                            f"(domains with rows: {', '.join(present) or 'none'}); set a source's `domain:` "
                            f"or remove '{domain}' from `domains`")
    total_w = sum(mix.domains.values())
    plans: list[UnitPlan] = []
    for domain, members in by_domain.items():
        if mix.within == "equal":
            inner = {i: 1.0 for i in range(len(members))}
        elif mix.within == "natural":
            inner = {i: float(u.available) for i, u in enumerate(members)}
        else:
            inner = {i: float(mix.within[u.source]) for i, u in enumerate(members)}
        inner_total = sum(inner.values()) or 1.0
        for i, u in enumerate(members):
            plans.append(UnitPlan(u, mix.domains[domain] / total_w * inner[i] / inner_total))
    size = mix.size
    if size is None:
        size = min(int(p.unit.available / p.share) for p in plans if p.share > 0)
        if size <= 0:
            empty = [p.unit.source for p in plans if p.unit.available == 0]
            raise DataError(f"mix '{name}': unsatisfiable ratios: source(s) {', '.join(empty)} have no rows"
                            f"{_from(mix)}, so no mix keeps their share; give them rows or leave them out "
                            f"(`within:` weights, or their domain out of `domains`)")
    domain_rows = _largest_remainder(size, {d: w for d, w in mix.domains.items()})
    for domain in mix.domains:
        members = [p for p in plans if p.unit.domain == domain]
        counts = _largest_remainder(domain_rows[domain], {i: p.share for i, p in enumerate(members)})
        for i, p in enumerate(members):
            p.rows = counts[i]
    for p in plans:
        if p.rows and p.unit.available == 0:
            raise DataError(f"mix '{name}': unsatisfiable ratios: source '{p.unit.source}' (domain "
                            f"'{p.unit.domain}') has no rows{_from(mix)} but its share needs {p.rows}")
    short = [p for p in plans if p.rows > p.unit.available]
    if short and not mix.oversample:
        fits = min(int(q.unit.available / q.share) for q in plans if q.share > 0)
        listing = "; ".join(f"'{p.unit.source}' has {p.unit.available} rows but its share ({p.share:.2%}) needs {p.rows}"
                            for p in short)
        raise DataError(f"mix '{name}': unsatisfiable ratios without oversampling for {size} rows{_from(mix)}: "
                        f"{listing}; set `oversample: true`, or a `size` of at most {fits} (or leave `size` out)")
    return plans, warnings


def _from(mix: Any) -> str:
    return f" in '{mix.from_}'" if mix.from_ else ""


def _seed_part(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def draw(plan: UnitPlan, seed: int) -> Any:
    """Positions (within the unit) of the rows drawn: whole copies, then a seeded sample without replacement."""
    import numpy as np

    n, k = plan.unit.available, plan.rows
    rng = np.random.default_rng([seed, _seed_part(plan.unit.source), _seed_part(plan.unit.domain)])
    if k <= n:
        return rng.choice(n, size=k, replace=False)
    copies, rest = divmod(k, n)
    return np.concatenate([np.tile(np.arange(n), copies), rng.choice(n, size=rest, replace=False)])


def build_mix(pools: dict[str, Any], mix: Any, name: str, domains: Optional[dict[str, str]] = None
              ) -> tuple[Any, dict, list[str]]:
    """Mix the pools (source -> Dataset of records; `domains`: a source's declared domain, for empty pools);
    returns the mixed Dataset, its info and warnings."""
    import numpy as np
    from datasets import concatenate_datasets

    from engine.data.encoding import column

    units: list[Unit] = []
    positions: dict[tuple[str, str], Any] = {}
    for source, ds in pools.items():
        by_domain: dict[str, list[int]] = {}
        for i, d in enumerate(column(ds, "domain")):
            by_domain.setdefault(d or "none", []).append(i)
        if not by_domain:
            units.append(Unit(source, (domains or {}).get(source) or "none", 0))
            positions[(source, units[-1].domain)] = np.arange(0)
        for d, pos in by_domain.items():
            units.append(Unit(source, d, len(pos)))
            positions[(source, d)] = np.asarray(pos)
    plans, warnings = plan_mix(units, mix, name)
    parts = []
    for p in plans:
        if p.rows:
            chosen = positions[(p.unit.source, p.unit.domain)][draw(p, mix.seed)]
            parts.append(pools[p.unit.source].select(chosen))
    mixed = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    order = np.random.default_rng([mix.seed, _seed_part(name)]).permutation(len(mixed))
    mixed = mixed.select(order)
    return mixed, mix_info(plans, mix, name, len(mixed)), warnings


def mix_info(plans: list[UnitPlan], mix: Any, name: str, rows: int) -> dict:
    """The mix's entry in info.json: counts per source and domain, achieved vs requested ratios, oversampling."""
    total_w = sum(mix.domains.values())
    domains = {}
    for domain, w in mix.domains.items():
        members = [p for p in plans if p.unit.domain == domain]
        got = sum(p.rows for p in members)
        domains[domain] = {"weight": w, "requested": round(w / total_w, 6), "achieved": round(got / rows, 6) if rows else 0,
                           "rows": got, "unique_rows": sum(p.unique for p in members),
                           "sources": [p.unit.source for p in members]}
    sources = {}
    for p in plans:
        key = p.unit.source if sum(q.unit.source == p.unit.source for q in plans) == 1 else f"{p.unit.source}/{p.unit.domain}"
        sources[key] = {"domain": p.unit.domain, "available": p.unit.available, "rows": p.rows, "unique_rows": p.unique,
                        "requested": round(p.share, 6), "achieved": round(p.rows / rows, 6) if rows else 0,
                        "oversampling_factor": round(p.factor, 4), "oversampled": p.rows > p.unit.available}
    return {"from": mix.from_, "seed": mix.seed, "size": mix.size, "rows": rows,
            "unique_rows": sum(p.unique for p in plans), "within": mix.within, "oversample": mix.oversample,
            "domains": domains, "sources": sources}
