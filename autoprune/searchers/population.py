"""One pymoo population at a time, handed out member by member and told back whole (no torch).

``emo`` and each of ``emo-pms``'s sub-network searches drive pymoo's ask-and-tell alike:
pymoo's ``ask()`` gives a population, the run loop evaluates its members over as many
``Searcher.ask(n)`` calls as it takes, and the population goes back (``tell``) once every
member is answered, with objectives ``F`` and constraints ``G`` handed over through
:class:`~pymoo.problems.static.StaticProblem` (pymoo never evaluates anything itself).
A member equal to a candidate evaluated before is answered at once from that result, so
a search never pays twice for one model. Members are filed by position, and positions
are handed out in order, so given the same results the bookkeeping is the same on a
replay: a killed run resumes mid-generation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pymoo.core.algorithm import Algorithm
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.core.problem import Problem as PymooProblem
from pymoo.problems.static import StaticProblem

#: what a member's evaluation tells pymoo: its objectives and its constraint values
Answer = tuple[np.ndarray, np.ndarray]


class AskTellPopulation:
    """The population pymoo's ``algorithm`` (set up on ``problem``) has out, if any."""

    def __init__(self, algorithm: Algorithm, problem: PymooProblem) -> None:
        self.algorithm = algorithm
        self.problem = problem
        #: populations told back to pymoo
        self.n_generations = 0
        self.population: Population | None = None
        #: the members' levels (integers), one row per member of the population out
        self.levels = np.empty((0, problem.n_var), dtype=np.int64)
        self.answers: list[Answer | None] = []
        self.queue: list[int] = []  # members not handed out yet
        self.outstanding: list[int] = []  # handed out, not answered yet

    @property
    def out(self) -> bool:
        """Whether a population is out (asked for, not told back yet)."""
        return self.population is not None

    def ask(self, known: Callable[[np.ndarray], Answer | None]) -> bool:
        """Take pymoo's next population; each member ``known`` answers (a candidate evaluated
        before) is answered at once. False when pymoo gives no population."""
        population = self.algorithm.ask()
        if population is None or len(population) == 0:
            return False
        self.population = population
        self.levels = np.asarray(population.get("X")).astype(np.int64)
        self.answers = [known(row) for row in self.levels]
        self.queue = [i for i, answer in enumerate(self.answers) if answer is None]
        self.outstanding = []
        return True

    def hand_out(self, n: int | None = None) -> list[int]:
        """The next ``n`` members not handed out yet (all when None), now outstanding."""
        count = len(self.queue) if n is None else max(0, n)
        handed, self.queue = self.queue[:count], self.queue[count:]
        self.outstanding.extend(handed)
        return handed

    def outstanding_with(self, levels: np.ndarray) -> int | None:
        """The outstanding member with these levels (unique in a population: pymoo removes
        duplicates), or None."""
        return next((i for i in self.outstanding if np.array_equal(levels, self.levels[i])), None)

    def answer(self, member: int, answer: Answer) -> None:
        """File an outstanding member's objectives and constraints."""
        self.outstanding.remove(member)
        self.answers[member] = answer

    @property
    def complete(self) -> bool:
        """Whether a population is out and every member is answered."""
        return self.population is not None and not self.queue and not self.outstanding

    def give_back(self) -> None:
        """Tell pymoo the whole population's objectives and constraints."""
        assert self.complete, "every member is answered before the population goes back"
        answers = [a for a in self.answers if a is not None]
        F = np.stack([a[0] for a in answers])
        G = np.stack([a[1] for a in answers])
        Evaluator().eval(StaticProblem(self.problem, F=F, G=G), self.population)
        self.algorithm.tell(infills=self.population)
        self.n_generations += 1
        self.population = None
