"""Month-by-month simulation of the TechFlow customer database.

The world is a population of leads and customers with latent states (a lead's fit and
interest; a customer's health, engagement, budget and advocacy) that drive both what the
database records (orders, usage, tickets, NPS, e-mail responses, referrals, plan changes) and
the outcomes the models predict. Every month draws from its own seeded random stream, so a
longer run reproduces a shorter one's history exactly: that is how the world advances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from simulator import model as m
from simulator.model import BoolArray, Calibration, FloatArray, IntArray
from simulator.oracle import customer_truth, dormant_truth

log = logging.getLogger(__name__)

START = pd.Timestamp("2023-12-01")
DAYS_IN_CHUNK = 28  # event days are drawn from the first 28 days of a month
# A lead created in month m is aged (more than 12 months without a purchase) from cutoff m + 13.
AGED_AFTER = 12


def month_starts(months: int, start: pd.Timestamp = START) -> np.ndarray:
    """Dates of the first day of months 0..months (the monthly cutoffs), as datetime64[D]."""
    return pd.date_range(start, periods=months + 1, freq="MS").values.astype("datetime64[D]")


def _rng(seed: int, month: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, month, stream]))


@dataclass
class Customers:
    """Column arrays of every customer the world has had, in order of first signup."""

    lead: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    signup_month: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    signup_day: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    spell_start: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    spell_day: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    industry: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    size: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    source: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    seats: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    annual: BoolArray = field(default_factory=lambda: np.zeros(0, bool))
    signup_tier: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    tier: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    add_ons: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    active: BoolArray = field(default_factory=lambda: np.zeros(0, bool))
    churn_month: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    churn_day: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    prior_tenure: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    pending: BoolArray = field(default_factory=lambda: np.zeros(0, bool))
    health: FloatArray = field(default_factory=lambda: np.zeros(0))
    engagement: FloatArray = field(default_factory=lambda: np.zeros(0))
    budget: FloatArray = field(default_factory=lambda: np.zeros(0))
    advocacy: FloatArray = field(default_factory=lambda: np.zeros(0))
    mean_health: FloatArray = field(default_factory=lambda: np.zeros(0))
    mean_engagement: FloatArray = field(default_factory=lambda: np.zeros(0))
    mean_budget: FloatArray = field(default_factory=lambda: np.zeros(0))
    mean_advocacy: FloatArray = field(default_factory=lambda: np.zeros(0))

    def append(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            setattr(self, name, np.concatenate([getattr(self, name), values]))

    def __len__(self) -> int:
        return len(self.lead)


@dataclass
class Leads:
    """Column arrays of every lead, in order of creation."""

    created_month: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    created_day: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    source: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    size: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    industry: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    employees: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    fit: FloatArray = field(default_factory=lambda: np.zeros(0))
    score: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    interest: FloatArray = field(default_factory=lambda: np.zeros(0))
    customer: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    pending: BoolArray = field(default_factory=lambda: np.zeros(0, bool))

    def append(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            setattr(self, name, np.concatenate([getattr(self, name), values]))

    def __len__(self) -> int:
        return len(self.fit)


class EventLog:
    """Per-table lists of column dictionaries, concatenated once at the end."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[dict[str, np.ndarray]]] = {}

    def add(self, table: str, **columns: np.ndarray | bool) -> None:
        size = max(len(v) for v in columns.values() if isinstance(v, np.ndarray))
        arrays = {
            k: v if isinstance(v, np.ndarray) else np.full(size, v) for k, v in columns.items()
        }
        if size:
            self.chunks.setdefault(table, []).append(arrays)

    def frame(self, table: str, columns: list[str]) -> pd.DataFrame:
        chunks = self.chunks.get(table, [])
        if not chunks:
            return pd.DataFrame({c: np.zeros(0) for c in columns})
        return pd.DataFrame({c: np.concatenate([ch[c] for ch in chunks]) for c in columns})


@dataclass
class World:
    """A simulated database: raw tables plus the oracle's ground truth."""

    raw: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]
    months: int
    scale: float
    seed: int


def simulate(
    months: int = 36, scale: float = 1.0, seed: int = 42, cal: Calibration | None = None
) -> World:
    """Run the world for `months` months and return its tables and ground truth."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if months < 13:
        raise ValueError(f"months must be at least 13 (leads age for 12 months), got {months}")
    cal = cal or Calibration()
    sim = _Simulation(months, scale, seed, cal)
    sim.run()
    return World(raw=sim.tables(), truth=sim.truth_tables(), months=months, scale=scale, seed=seed)


class _Simulation:
    def __init__(self, months: int, scale: float, seed: int, cal: Calibration) -> None:
        self.months, self.scale, self.seed, self.cal = months, scale, seed, cal
        self.starts = month_starts(months + 3)
        self.start_month = int(pd.Timestamp(self.starts[0]).month)
        self.c = Customers()
        self.leads = Leads()
        self.log = EventLog()
        self.truth: dict[str, list[pd.DataFrame]] = {k: [] for k in ("customer", "dormant")}
        # Conversions and returns decided by outreach, due in a later month: month -> indices.
        self.due_conversions: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.due_returns: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        # The month's stream for the leads' fit scores (set again at the start of each month).
        self.score_rng = _rng(seed, 0, 4)

    # ---- helpers ---------------------------------------------------------------------------
    def date(self, month: int | np.ndarray, day: np.ndarray) -> np.ndarray:
        return self.starts[month] + day.astype("timedelta64[D]")

    def month_of(self, dates: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, dates, side="right") - 1

    # ---- the main loop -----------------------------------------------------------------------
    def run(self) -> None:
        for month in range(self.months):
            rng = _rng(self.seed, month, 0)
            self.score_rng = _rng(self.seed, month, 4)
            self.new_leads(month, rng)
            # Outreach comes before the month's conversions, so a contact who answers a touch
            # later in the same month converts on its date like any other.
            self.outreach(month, rng)
            self.convert_leads(month, rng)
            self.customer_month(month, rng)
            self.lead_newsletters(month, rng)
            self.lead_web_visits(month)
            # The truth at the next cutoff knows the state this month leaves behind; the latent
            # step into the next month, drawn just after, is future to it.
            self.record_truth(month + 1)
            self.evolve(rng)

    def record_truth(self, cutoff: int) -> None:
        rng = _rng(self.seed, cutoff, 1)
        c = self.c
        eligible = np.flatnonzero(c.active & (c.spell_start < cutoff))
        self.truth["customer"].append(
            customer_truth(self.cal, c, eligible, cutoff, self.start_month, rng)
        )
        self.truth["dormant"].append(self.dormant_state(cutoff))

    def dormant_state(self, cutoff: int) -> pd.DataFrame:
        leads, c = self.leads, self.c
        age = cutoff - leads.created_month
        aged = np.flatnonzero((age > AGED_AFTER) & (leads.customer < 0) & ~leads.pending)
        former = np.flatnonzero(~c.active & (c.churn_month < cutoff) & ~c.pending)
        return dormant_truth(self.cal, leads, aged, c, former, cutoff)

    # ---- leads -----------------------------------------------------------------------------
    def new_leads(self, month: int, rng: np.random.Generator) -> None:
        expected = self.cal.leads_per_month * self.scale * np.exp(self.cal.growth * month)
        n = int(rng.poisson(expected))
        source = rng.choice(len(m.SOURCES), n, p=m.SOURCE_WEIGHTS)
        self.add_leads(month, source, rng.integers(0, DAYS_IN_CHUNK, n), rng)

    def add_leads(
        self, month: int, source: np.ndarray, day: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        n = len(source)
        size = rng.choice(len(m.SIZES), n, p=m.SIZE_WEIGHTS)
        employees = np.maximum(
            1, np.round(m.SIZE_SEATS[size] * 6 * rng.lognormal(0, 0.5, n))
        ).astype(np.int64)
        fit = m.SOURCE_FIT[source] + 0.25 * size + rng.normal(0, 0.7, n)
        # The marketing system's fit score at capture, from a stream of its own (so adding it
        # left every other draw as it was): a noisy reading of the lead's fit.
        score = m.lead_score(fit, self.score_rng.normal(0, 0.5, n))
        first = len(self.leads)
        self.leads.append(
            created_month=np.full(n, month, np.int64),
            created_day=day.astype(np.int64),
            source=source.astype(np.int64),
            size=size.astype(np.int64),
            industry=rng.choice(len(m.INDUSTRIES), n, p=m.INDUSTRY_WEIGHTS).astype(np.int64),
            employees=employees,
            fit=fit,
            score=score,
            interest=rng.normal(0.8, 0.5, n),
            customer=np.full(n, -1, np.int64),
            pending=np.zeros(n, bool),
        )
        return np.arange(first, first + n)

    def convert_leads(self, month: int, rng: np.random.Generator) -> None:
        leads = self.leads
        age = month - leads.created_month
        fresh = np.flatnonzero((age <= AGED_AFTER) & (leads.customer < 0) & ~leads.pending)
        p = m.lead_conversion_hazard(
            self.cal, leads.fit[fresh], leads.interest[fresh], age[fresh].astype(float)
        )
        won = fresh[rng.random(len(fresh)) < p]
        low = np.where(leads.created_month[won] == month, leads.created_day[won], 0)
        day = rng.integers(low, DAYS_IN_CHUNK)
        for due_leads, due_days in self.due_conversions.pop(month, []):
            won, day = np.concatenate([won, due_leads]), np.concatenate([day, due_days])
        self.add_customers(month, won, day, rng)
        for due_customers, due_days in self.due_returns.pop(month, []):
            self.return_customers(month, due_customers, due_days)

    def add_customers(
        self, month: int, lead_idx: np.ndarray, day: np.ndarray, rng: np.random.Generator
    ) -> None:
        leads = self.leads
        n = len(lead_idx)
        size, fit = leads.size[lead_idx], leads.fit[lead_idx]
        industry = leads.industry[lead_idx]
        mean_h = 0.25 + m.INDUSTRY_HEALTH[industry] + 0.3 * fit + rng.normal(0, 0.8, n)
        mean_e = 0.3 * fit + rng.normal(0, 0.8, n)
        mean_b = m.SIZE_BUDGET[size] + rng.normal(0, 0.7, n)
        mean_a = -0.3 + 0.5 * mean_h + rng.normal(0, 0.8, n)
        budget = mean_b + rng.normal(0, 0.4, n)
        tier_score = budget + rng.normal(0, 0.5, n)
        tier = np.digitize(tier_score, [0.15, 1.25]).astype(np.int64)
        annual = rng.random(n) < 0.25 + 0.1 * size
        # Bigger budgets buy more seats: seat count is the visible side of the budget.
        spread = np.exp(0.45 * (mean_b - m.SIZE_BUDGET[size])) * rng.lognormal(0, 0.25, n)
        seats = np.maximum(2, np.round(m.SIZE_SEATS[size] * spread))
        first = len(self.c)
        self.c.append(
            lead=lead_idx.astype(np.int64),
            signup_month=np.full(n, month, np.int64),
            signup_day=day.astype(np.int64),
            spell_start=np.full(n, month, np.int64),
            spell_day=day.astype(np.int64),
            industry=industry,
            size=size,
            source=leads.source[lead_idx],
            seats=seats.astype(np.int64),
            annual=annual,
            signup_tier=tier,
            tier=tier.copy(),
            add_ons=np.zeros(n, np.int64),
            active=np.ones(n, bool),
            churn_month=np.full(n, -1, np.int64),
            churn_day=np.full(n, -1, np.int64),
            prior_tenure=np.zeros(n, np.int64),
            pending=np.zeros(n, bool),
            health=mean_h + rng.normal(0, 0.4, n),
            engagement=mean_e + rng.normal(0, 0.4, n),
            budget=budget,
            advocacy=mean_a + rng.normal(0, 0.4, n),
            mean_health=mean_h,
            mean_engagement=mean_e,
            mean_budget=mean_b,
            mean_advocacy=mean_a,
        )
        idx = np.arange(first, first + n)
        leads.customer[lead_idx] = idx
        leads.pending[lead_idx] = False
        dates = self.date(month, day)
        self.log.add("lifecycle", customer=idx, date=dates, event=np.full(n, "signup"))
        self.log.add(
            "orders", customer=idx, date=dates, product=tier, amount=m.TIER_PRICE[tier], new=True
        )

    def return_customers(self, month: int, idx: np.ndarray, day: np.ndarray) -> None:
        c = self.c
        c.active[idx], c.pending[idx] = True, False
        c.prior_tenure[idx] += c.churn_month[idx] - c.spell_start[idx]
        c.spell_start[idx], c.spell_day[idx] = month, day
        c.churn_month[idx], c.churn_day[idx] = -1, -1
        c.add_ons[idx] = 0
        c.health[idx] = np.maximum(c.health[idx], c.mean_health[idx])
        dates = self.date(month, day)
        tier = c.tier[idx]
        self.log.add("lifecycle", customer=idx, date=dates, event=np.full(len(idx), "return"))
        self.log.add(
            "orders", customer=idx, date=dates, product=tier, amount=m.TIER_PRICE[tier], new=True
        )

    # ---- customers ---------------------------------------------------------------------------
    def customer_month(self, month: int, rng: np.random.Generator) -> None:
        c, cal = self.c, self.cal
        moy = m.calendar_month(month, self.start_month)
        idx = np.flatnonzero(c.active & (c.spell_start < month))
        n = len(idx)
        h, e, b, a = c.health[idx], c.engagement[idx], c.budget[idx], c.advocacy[idx]
        tier, add_ons = c.tier[idx], c.add_ons[idx]
        first_day = self.date(month, np.zeros(n, np.int64))
        # Invoices on the 1st for the plan and every add-on held at the start of the month.
        self.log.add(
            "orders",
            customer=idx,
            date=first_day,
            product=tier,
            amount=m.TIER_PRICE[tier],
            new=False,
        )
        held_rows, held_rank = _expand_counts(add_ons)
        self.log.add(
            "orders",
            customer=idx[held_rows],
            date=first_day[held_rows],
            product=len(m.TIERS) + held_rank,
            amount=m.ADD_ON_PRICE[held_rank],
            new=False,
        )
        cross = rng.random(n) < m.cross_sell_hazard(cal, e, b, h, add_ons, np.full(n, moy))
        up = rng.random(n) < m.upsell_hazard(cal, b, e, h, tier)
        down = ~up & (rng.random(n) < m.downgrade_hazard(cal, b, h, tier))
        refer = rng.random(n) < m.referral_hazard(cal, a, h)
        service = rng.random(n) < m.services_hazard(cal, b, e)
        tenure = (month - c.spell_start[idx]).astype(float)
        renewal = c.annual[idx] & (tenure % 12 == 0)
        churn_p = m.churn_hazard(cal, h, e, b, tenure, c.annual[idx], renewal, np.full(n, moy))
        churn = rng.random(n) < churn_p
        churn_day = np.where(renewal, c.spell_day[idx], rng.integers(0, DAYS_IN_CHUNK, n))
        day = rng.integers(1, DAYS_IN_CHUNK, (n, 4))  # cross-sell, plan change, referral, service
        day = np.minimum(day, np.where(churn, churn_day, DAYS_IN_CHUNK - 1)[:, None])

        buy = idx[cross]
        rank = c.add_ons[buy]
        self.log.add(
            "orders",
            customer=buy,
            date=self.date(month, day[cross, 0]),
            product=len(m.TIERS) + rank,
            amount=m.ADD_ON_PRICE[rank],
            new=True,
        )
        c.add_ons[buy] += 1
        changed = up | down
        new_tier = tier + up.astype(np.int64) - down.astype(np.int64)
        self.log.add(
            "plan_changes",
            customer=idx[changed],
            date=self.date(month, day[changed, 1]),
            from_tier=tier[changed],
            to_tier=new_tier[changed],
        )
        c.tier[idx] = new_tier
        kind = rng.choice(len(m.SERVICES), int(service.sum()), p=m.SERVICE_WEIGHTS)
        self.log.add(
            "orders",
            customer=idx[service],
            date=self.date(month, day[service, 3]),
            product=len(m.TIERS) + len(m.ADD_ONS) + kind,
            amount=np.array([p for _, _, p in m.SERVICES])[kind],
            new=True,
        )
        self.referrals(month, idx[refer], day[refer, 2], rng)

        lapsed = idx[churn]
        c.active[lapsed] = False
        c.churn_month[lapsed], c.churn_day[lapsed] = month, churn_day[churn]
        self.log.add(
            "lifecycle",
            customer=lapsed,
            date=self.date(month, churn_day[churn]),
            event=np.full(len(lapsed), "churn"),
        )
        self.observe_customers(month, rng)

    def referrals(
        self, month: int, referrer: np.ndarray, day: np.ndarray, rng: np.random.Generator
    ) -> None:
        source = np.full(len(referrer), m.SOURCES.index("referral"))
        new = self.add_leads(month, source, day, rng)
        self.log.add("referrals", customer=referrer, lead=new, date=self.date(month, day))

    def observe_customers(self, month: int, rng: np.random.Generator) -> None:
        """Weekly usage, tickets, NPS answers and newsletter responses of the month."""
        c = self.c
        present = (c.active | (c.churn_month == month)) & (c.spell_start <= month)
        idx = np.flatnonzero(present)
        n = len(idx)
        h, e, a, b = c.health[idx], c.engagement[idx], c.advocacy[idx], c.budget[idx]
        first = np.where(c.spell_start[idx] == month, c.spell_day[idx], 0)
        last = np.where(c.churn_month[idx] == month, c.churn_day[idx], 40)
        seats = c.seats[idx]
        headroom = (c.tier[idx] < len(m.TIERS) - 1) | (c.add_ons[idx] < len(m.ADD_ONS))
        prompt_rng = _rng(self.seed, month, 2)

        # Weekly usage: weeks (Mondays) starting inside this month.
        lo, hi = self.starts[month], self.starts[month + 1]
        offset = (7 - (lo.astype("datetime64[D]").view("int64") - 4) % 7) % 7  # 1970-01-05 Mon
        mondays = np.arange(lo + np.timedelta64(int(offset), "D"), hi, np.timedelta64(7, "D"))
        for monday in mondays:
            dom = int((monday - lo).astype(int))
            live = (first <= dom) & (last >= dom)
            rows = np.flatnonzero(live)
            k = len(rows)
            dip = (
                0.8
                if pd.Timestamp(monday).month == 8
                or pd.Timestamp(monday).day > 20
                and (pd.Timestamp(monday).month == 12)
                else 1.0
            )
            share = m.sigmoid(0.2 + 1.2 * h[rows] + 0.35 * e[rows] + rng.normal(0, 0.15, k))
            users = rng.binomial(seats[rows], share)
            rate = users * 3.0 * dip * np.exp(0.6 * e[rows] + rng.normal(0, 0.15, k))
            # Advocates bring colleagues and partners in: invitations sent from the product.
            invite_rate = np.sqrt(users + 1.0) * np.exp(1.0 * a[rows] - 0.5)
            # Drawn from a stream of their own, so adding them left every other draw as it was.
            prompt_rate = m.upgrade_prompt_rate(
                users.astype(float), b[rows], e[rows], headroom[rows]
            )
            prompts = prompt_rng.poisson(prompt_rate * prompt_rng.lognormal(0, 0.2, k))
            self.log.add(
                "usage",
                customer=idx[rows],
                week=np.full(k, monday),
                users=users.astype(np.int64),
                sessions=rng.poisson(rate).astype(np.int64),
                invites=rng.poisson(invite_rate).astype(np.int64),
                prompts=prompts.astype(np.int64),
            )

        span = np.maximum(np.minimum(last, DAYS_IN_CHUNK - 1) - first + 1, 1)
        frac = span / DAYS_IN_CHUNK
        rate = frac * np.exp(-1.2 - 0.8 * h + 0.35 * np.log(seats / 4.0))
        count = rng.poisson(rate)
        rows = np.repeat(np.arange(n), count)
        k = len(rows)
        severe = m.sigmoid(-1.4 - 0.8 * h[rows])
        u = rng.random(k)
        severity = np.where(u < severe * 0.3, 3, np.where(u < severe, 2, np.where(u < 0.6, 0, 1)))
        tday = first[rows] + (rng.random(k) * span[rows]).astype(np.int64)
        self.log.add(
            "tickets",
            customer=idx[rows],
            date=self.date(month, tday),
            severity=severity.astype(np.int64),
            hours=np.round(rng.lognormal(2.0 + 0.5 * severity, 0.6), 1),
        )

        asked = (rng.random(n) < 1 / 2) & (last >= 14) & (first <= 14)
        answered = asked & (rng.random(n) < m.sigmoid(0.3 + 0.5 * e))
        score = np.clip(np.round(7.0 + 1.3 * h + 1.1 * a + rng.normal(0, 1.3, n)), 0, 10)
        self.log.add(
            "nps",
            customer=idx[answered],
            date=self.date(month, np.full(int(answered.sum()), 14)),
            score=score[answered].astype(np.int64),
        )

        sent = (first <= 3) & (last >= 3)
        opened = sent & (rng.random(n) < m.sigmoid(-0.6 + 0.9 * e + 0.3 * a))
        clicked = opened & (rng.random(n) < m.sigmoid(-1.2 + 0.5 * e + 0.4 * b + 0.5 * a))
        self.touches(
            month,
            "customer",
            idx[sent],
            np.full(int(sent.sum()), 3),
            "newsletter",
            opened[sent],
            clicked[sent],
            rng,
        )

    def touches(
        self,
        month: int,
        kind: str,
        entity: np.ndarray,
        day: np.ndarray,
        campaign: str,
        opened: np.ndarray,
        clicked: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Log touches and their open/click responses; returns the touch dates."""
        n = len(entity)
        dates = self.date(month, day)
        self.log.add(
            "touches",
            kind=np.full(n, kind),
            entity=entity,
            date=dates,
            campaign=np.full(n, campaign),
        )
        # Responses refer to touches by position; ids are assigned at the end.
        position = self._touch_count + np.arange(n)
        self._touch_count += n
        delay = rng.integers(0, 4, n).astype("timedelta64[D]")
        for flag, name, extra in ((opened, "open", 0), (clicked, "click", 1)):
            self.log.add(
                "responses",
                touch=position[flag],
                date=dates[flag] + delay[flag] + np.timedelta64(extra, "D"),
                response=np.full(int(flag.sum()), name),
            )
        return position

    _touch_count = 0

    # ---- outreach to dormant contacts -------------------------------------------------------
    def outreach(self, month: int, rng: np.random.Generator) -> None:
        cal, leads, c = self.cal, self.leads, self.c
        age = month - leads.created_month
        aged = np.flatnonzero((age > AGED_AFTER) & (leads.customer < 0) & ~leads.pending)
        # Targeting leans slightly towards recently engaged leads, as marketers do.
        weight = m.targeting_weight(leads.interest[aged])
        weight /= weight.mean() if len(aged) else 1.0
        chosen = aged[rng.random(len(aged)) < cal.reactivation_touch * weight]
        p = m.sigmoid(
            m.reactivation_logit(
                cal,
                leads.fit[chosen],
                leads.interest[chosen],
                age[chosen].astype(float),
                leads.size[chosen],
            )
        )
        self._dormant_touches(month, "lead", chosen, p, "reactivation", rng)

        former = np.flatnonzero(~c.active & (c.churn_month < month) & ~c.pending)
        chosen = former[rng.random(len(former)) < cal.winback_touch]
        p = m.winback_probability(
            cal,
            c.health[chosen],
            c.budget[chosen],
            (c.prior_tenure[chosen] + c.churn_month[chosen] - c.spell_start[chosen]).astype(float),
            (month - c.churn_month[chosen]).astype(float),
            c.tier[chosen],
        )
        self._dormant_touches(month, "customer", chosen, p, "winback", rng)

    def _dormant_touches(
        self,
        month: int,
        kind: str,
        entity: np.ndarray,
        p: FloatArray,
        campaign: str,
        rng: np.random.Generator,
    ) -> None:
        n = len(entity)
        day = rng.integers(0, 14, n)
        converts = rng.random(n) < p
        opened = converts | (rng.random(n) < 0.25)
        clicked = converts | (opened & (rng.random(n) < 0.2))
        position = self.touches(month, kind, entity, day, campaign, opened, clicked, rng)
        when = self.date(month, day[converts]) + rng.integers(1, 61, int(converts.sum())).astype(
            "timedelta64[D]"
        )
        self.log.add(
            "responses",
            touch=position[converts],
            date=when,
            response=np.full(int(converts.sum()), "convert"),
        )
        due_month = self.month_of(when)
        due_day = (when - self.starts[due_month]).astype(np.int64)
        target = self.due_conversions if kind == "lead" else self.due_returns
        pending = self.leads.pending if kind == "lead" else self.c.pending
        winners = entity[converts]
        pending[winners] = True
        for mo in np.unique(due_month):
            sel = due_month == mo
            target.setdefault(int(mo), []).append((winners[sel], due_day[sel]))

    def lead_newsletters(self, month: int, rng: np.random.Generator) -> None:
        """Monthly mailings to every lead that is still a lead on the mailing day. The mailer
        cannot know who will convert: a lead answering a touch keeps its mailings until the
        day it becomes a customer, so the mailings never reveal a coming conversion."""
        leads, c = self.leads, self.c
        age = month - leads.created_month
        converted = leads.customer >= 0
        # Day of the month the lead became a customer: 0 before this month, past its end if not.
        signup_day = np.full(len(leads), DAYS_IN_CHUNK)
        this_month = c.signup_month[leads.customer[converted]] == month
        signup_day[converted] = np.where(this_month, c.signup_day[leads.customer[converted]], 0)
        for campaign, day, ages in (("nurture", 8, age <= 6), ("newsletter", 3, age > 6)):
            entity = np.flatnonzero((signup_day >= day) & (age >= 1) & ages)
            score = -2.4 + 0.5 * leads.fit[entity] + 2.0 * leads.interest[entity]
            opened = rng.random(len(entity)) < m.sigmoid(score)
            clicked = opened & (rng.random(len(entity)) < m.sigmoid(-1.0 + leads.interest[entity]))
            self.touches(
                month, "lead", entity, np.full(len(entity), day), campaign, opened, clicked, rng
            )

    def lead_web_visits(self, month: int) -> None:
        """Website visits of the month by every lead that is still a lead on the visit's day.
        Drawn from a stream of their own, so adding them left every other draw as it was."""
        rng = _rng(self.seed, month, 3)
        leads, c = self.leads, self.c
        customer = leads.customer
        # Day of the month a lead becomes a customer: past the month's end if it has not,
        # -1 if it became one in an earlier month (it visits as a lead no more).
        signup = np.full(len(leads), DAYS_IN_CHUNK)
        won = np.flatnonzero(customer >= 0)
        signup[won] = np.where(
            c.signup_month[customer[won]] == month, c.signup_day[customer[won]], -1
        )
        alive = np.flatnonzero((leads.created_month <= month) & (signup > 0))
        count = rng.poisson(m.web_visit_rate(leads.fit[alive], leads.interest[alive]))
        lead = alive[_expand_counts(count)[0]]
        low = np.where(leads.created_month[lead] == month, leads.created_day[lead], 0)
        day = rng.integers(low, DAYS_IN_CHUNK)
        keep = day < signup[lead]
        lead, day = lead[keep], day[keep]
        pages = 1 + rng.poisson(1.5, len(lead))
        self.log.add("visits", lead=lead, date=self.date(month, day), pages=pages.astype(np.int64))

    def evolve(self, rng: np.random.Generator) -> None:
        """One month of latent drift. A former customer's state stays as it was at lapse:
        what a win-back touch meets is the experience they left with."""
        c = self.c
        active = c.active.astype(float)
        for name in ("health", "engagement", "budget", "advocacy"):
            value, mean = getattr(c, name), getattr(c, "mean_" + name)
            noise = rng.normal(0, 1, len(value))
            step = m.PULL * (mean - value) + m.INNOVATION[name] * noise
            setattr(c, name, value + active * step)
        leads = self.leads
        spike = (rng.random(len(leads)) < m.SPIKE_RATE) * rng.exponential(m.SPIKE_MEAN, len(leads))
        leads.interest = m.interest_step(leads.interest, spike)

    # ---- output ------------------------------------------------------------------------------
    def tables(self) -> dict[str, pd.DataFrame]:
        from simulator.tables import build_tables

        return build_tables(self)

    def truth_tables(self) -> dict[str, pd.DataFrame]:
        from simulator.tables import build_truth

        return build_truth(self)


def _expand_counts(counts: IntArray) -> tuple[np.ndarray, np.ndarray]:
    """Row index and rank 0..count-1 for each of `counts[i]` items of row i."""
    rows = np.repeat(np.arange(len(counts)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return rows, np.arange(len(rows)) - starts
