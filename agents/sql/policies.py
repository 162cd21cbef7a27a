"""The SQL policy: twin state-action energies (critics), their targets, a learned proposal, and a
Boltzmann policy that acts by MCMC action search on -min(Q_1, Q_2) (docs/architecture.md)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import Tensor, nn

from ebrl import BoltzmannPolicy, Energy, StateActionEnergy
from ebrl.agents.common.checks import check_action_space_box, check_observation_space
from ebrl.agents.common.soft_q_policy import SoftQPolicy
from ebrl.agents.common.updates import make_optimizer
from ebrl.energies import PessimisticEnergy, check_layer_norm, ensemble_energy
from ebrl.proposals import TanhGaussianProposal
from ebrl.samplers import MALA, DerivativeFree, Langevin, Sampler
from ebrl.samplers.base import FIXED_INIT_SEED
from ebrl.validation import check_choice, check_finite, check_fraction, check_int, check_positive_float

SAMPLERS = ("langevin", "mala", "dfo")
DETERMINISTIC_ACTS = ("search", "proposal", "mean")
# Importance draws of deterministic_act="mean" (the diagnostic that suggested it used 64).
MEAN_DRAWS = 64
# Per-kind default first step size (for "dfo": the initial perturbation std, Implicit BC's 0.33).
DEFAULT_STEP_SIZE = {"langevin": 0.1, "mala": 0.05, "dfo": 0.33}
# MALA's step-size adaptation target. 0.05 (not the 0.574 optimum for sampling a fixed target):
# with chains started by the proposal and 3 steps, bigger moves explore more and scored better on
# both tuning tasks (experiments/results/sql_tuning.md). BoltzmannPolicy adapts its between-call
# step scale toward it (within a call the step is fixed, so each call is an exact MH chain).
MALA_TARGET_ACCEPT = 0.05
# compile_act="auto" compiles the act for learn() runs of at least this many env steps: the compile
# (5-30 s once) costs what ~2.5k-10k eager acts save at ~3 ms each (experiments/results/act_compile.md).
COMPILE_ACT_MIN_STEPS = 20_000


def make_sampler(
    sampler: str,
    search_steps: int,
    step_size: float | None,
    sampler_kwargs: dict[str, Any] | None = None,
) -> Sampler:
    """Build the action search named by ``sampler`` (raises ValueError/TypeError on bad input).

    ``"langevin"``: Implicit BC's Langevin (Florence et al. 2021): polynomial step decay from
    ``step_size`` to ``step_size_final`` (default 1e-3; docs/architecture.md, "Samplers") and
    moves clipped to a tenth of the box. ``"mala"``: Metropolis-adjusted, exact for the truncated
    Boltzmann density, with the first quarter of the steps adapting the step size.
    ``"dfo"``: derivative-free iterative resampling; ``step_size`` is its initial noise std.
    ``sampler_kwargs`` override or extend these per-kind defaults.
    """
    kind = check_choice("sampler", sampler, SAMPLERS)
    n_steps = check_int("search_steps", search_steps, minimum=1)
    eta = DEFAULT_STEP_SIZE[kind] if step_size is None else check_positive_float("step_size", step_size)
    if sampler_kwargs is not None and not isinstance(sampler_kwargs, dict):
        raise TypeError(f"sampler_kwargs must be a dict or None, got {type(sampler_kwargs).__name__}")
    extra = dict(sampler_kwargs or {})
    try:
        if kind == "langevin":
            final = min(1e-3, eta)
            kwargs = {"step_size_final": final, "schedule": "polynomial", "move_clip": 0.1}
            if n_steps == 1:
                kwargs = {"schedule": "constant", "move_clip": 0.1}
            return Langevin(n_steps=n_steps, step_size=eta, **{**kwargs, **extra})
        if kind == "mala":
            return MALA(n_steps=n_steps, step_size=eta,
                        **{"adapt_steps": n_steps // 4, "target_accept": MALA_TARGET_ACCEPT, **extra})
        return DerivativeFree(n_steps=n_steps, noise_scale=eta, **extra)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise TypeError(
                f"sampler_kwargs {sorted(extra)} are not all accepted by sampler={kind!r}: {err}"
            ) from err
        raise


def resolve_search_steps(search_steps: int, n_steps: int | None) -> int:
    """``search_steps``, or the deprecated policy keyword ``n_steps`` where one was given."""
    if n_steps is None:
        return search_steps
    warnings.warn(
        "policy_kwargs n_steps is now called search_steps (SQL's own n_steps is the n-step return); "
        f"using search_steps={n_steps!r}",
        DeprecationWarning,
        stacklevel=3,
    )
    return n_steps


class SQLPolicy(SoftQPolicy):
    """Policy of :class:`~ebrl.agents.SQL`: owns the critics E_i(s, a) = -Q_i(s, a), their Polyak
    targets, the proposal q_phi, and the Boltzmann policy pi(a|s) ∝ exp(min_i Q_i(s, a)/alpha)
    (Haarnoja et al. 2017, eq. 6, on the twin minimum of Fujimoto et al. 2018).

    Actions are searched by MCMC on the pessimistic energy -min_i Q_i: the same function whose
    log-partition is the soft value of the target, and far less exploitable by one critic's
    errors than a single critic (``policy_energy="first"`` searches Q_1 alone, cheaper per step).
    All actions live in [-1, 1]^d (``squash_output=True``: SB3 rescales to the env's box and
    stores the scaled action in the replay buffer).

    Args:
        observation_space: the env's observation space (flattened into the state vector).
        action_space: the env's bounded Box action space.
        lr_schedule: learning-rate schedule of the critics' optimiser.
        net_arch: hidden widths of every critic.
        activation: activation of the critics and the proposal (one of
            ``ebrl.energies.ACTIVATIONS``). ReLU, as in SAC: with the chains started by the proposal,
            a few MALA steps need no smoother gradients; SiLU took 8.2 ms per env step on CPU in the
            "before" profile (experiments/results/sql_profile.md), and the previous SiLU critics
            stalled on a MuJoCo task where ReLU ones learned (issue 11's measurements).
        n_critics: number of critics (2: the twin-Q minimum of Fujimoto et al. 2018).
        critic_layer_norm: layer normalisation of the critics' hidden pre-activations (Ball et al.
            2023): ``True`` every hidden layer, ``"last"`` (the default, with SQL's reward_scale 0.1;
            experiments/results/sql_tuning.md) the last one only, ``False`` none
            (:class:`ebrl.energies.StateActionEnergy`). ``True`` cost 17-25 % more CPU per env step.
        policy_energy: the energy the Boltzmann policy samples and the proposal is fitted to:
            ``"min"`` (E = -min_i Q_i, :class:`ebrl.energies.PessimisticEnergy`: the function
            whose log-partition is the soft value of the target) or ``"first"`` (E = -Q_1).
        sampler: the action search, ``"langevin"``, ``"mala"`` or ``"dfo"`` (see :func:`make_sampler`).
        search_steps: MCMC steps K per action search (``n_steps`` of the sampler classes; the
            name differs from SB3's ``n_steps``, the n-step return of ``SQL(n_steps=...)``).
        n_steps: deprecated alias of ``search_steps`` (read from older saved models and configs,
            with a DeprecationWarning).
        step_size: first step size of the search (``None``: the per-kind default).
        sampler_kwargs: extra keyword arguments of the sampler class.
        n_chains: chains per state of the deterministic search (``deterministic_act="search"``;
            the lowest-energy one is returned).
            ``None``: 1 with a proposal (the descent starts at q_phi's mode; more starts let the
            noise-free search pick actions whose Q is over-estimated: on HalfCheetah 16 starts
            evaluated worse than 1, see experiments/results/sql_tuning.md), 16 without.
        explore_chains: chains per state for the behaviour (stochastic) action, of which the
            first is taken (chains are exchangeable: independent for Langevin/MALA, resampled
            draws for ``"dfo"``, which needs many). ``None``: 1 for Langevin/MALA (the cheapest
            exact choice), ``n_chains`` for ``"dfo"``.
        warm_start: keep each env's chain between steps (persistent chains; rows restart when
            their episode ends), so that fewer steps per env step suffice (without a proposal).
        proposal: learn a proposal q_phi(a|s) (a tanh-Gaussian, :class:`ebrl.proposals.TanhGaussianProposal`)
            toward the Boltzmann policy, by the reverse KL E_q[log q + E/alpha]. It starts the
            MCMC chains (sampling-importance-resampling) and is the importance proposal of the soft
            value; the acted policy is still exp(-E/alpha) (see :class:`ebrl.BoltzmannPolicy`).
        n_candidates: SIR candidates per acted action (with a proposal).
        defensive: weight eps of the uniform density in the defensive mixture
            eps U + (1 - eps) q_phi used for SIR and for the soft value.
        compile_act: act through one :func:`torch.compile`-d function (SIR + MALA fused, the
            same policy; :class:`ebrl.BoltzmannPolicy`): ~3x cheaper acting at one state on CPU
            (experiments/results/act_compile.md) after a one-off 5-30 s compile per input shape.
            ``"auto"``: compile from the first ``learn`` call whose run reaches
            ``COMPILE_ACT_MIN_STEPS`` env steps on (where the compile pays for itself), act eagerly
            until then (``predict`` alone, short runs). The default: long training runs get the
            compiled act, nothing else waits for a compile. ``False``: always eager (e.g. where
            no C++ compiler is installed).
        deterministic_act: what ``predict(..., deterministic=True)`` returns (the evaluation act;
            the behaviour act is always a draw of the Boltzmann policy). ``"mean"`` (the default,
            chosen on the tuning tasks: experiments/results/sql_tuning.md): the Boltzmann policy's
            mean action E_pi[a|s] (:meth:`ebrl.BoltzmannPolicy.mean_action` over ``MEAN_DRAWS``
            fixed importance draws), a function of the energy that averages over the policy's mass
            instead of descending to the critic's nearest maximum. ``"search"`` (the default before):
            the noise-free search on the energy from the proposal's quantiles, the lowest-energy
            chain (:meth:`ebrl.BoltzmannPolicy.mode`); it lost whole episodes where the learned
            critic has a spurious maximum. ``"proposal"``: q_phi's mode tanh(mu_phi(s)), as SAC
            evaluates its mean (needs ``proposal=True``; not a function of the energy).
        temperature: initial alpha of pi ∝ exp(Q/alpha); the algorithm updates it when tuned.
        normalize_images: passed to SB3's observation preprocessing.
        optimizer_class, optimizer_kwargs: the critics' optimiser.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: Sequence[int] = (256, 256),
        activation: str = "relu",
        n_critics: int = 2,
        critic_layer_norm: bool | str = "last",
        policy_energy: str = "min",
        sampler: str = "mala",
        search_steps: int = 3,
        step_size: float | None = None,
        sampler_kwargs: dict[str, Any] | None = None,
        n_chains: int | None = None,
        explore_chains: int | None = None,
        warm_start: bool = False,
        proposal: bool = True,
        n_candidates: int = 16,
        defensive: float = 0.1,
        compile_act: bool | str = "auto",
        deterministic_act: str = "mean",
        temperature: float = 1.0,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_steps: int | None = None,
    ) -> None:
        search_steps = resolve_search_steps(search_steps, n_steps)
        self.check_kwargs(
            net_arch=net_arch,
            activation=activation,
            n_critics=n_critics,
            critic_layer_norm=critic_layer_norm,
            policy_energy=policy_energy,
            sampler=sampler,
            search_steps=search_steps,
            step_size=step_size,
            sampler_kwargs=sampler_kwargs,
            n_chains=n_chains,
            explore_chains=explore_chains,
            n_candidates=n_candidates,
            defensive=defensive,
            compile_act=compile_act,
            deterministic_act=deterministic_act,
            proposal=proposal,
            temperature=temperature,
        )
        check_observation_space(observation_space)
        check_action_space_box(action_space)
        super().__init__(
            observation_space, action_space, net_arch, activation, temperature,
            normalize_images=normalize_images, optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs, squash_output=True,
        )
        # The settings as given, grouped: critics; search; chains; proposal.
        self.n_critics, self.policy_energy = n_critics, policy_energy
        self.critic_layer_norm = critic_layer_norm
        self.sampler_kind, self.search_steps, self.step_size = sampler, search_steps, step_size
        self.sampler_kwargs, self.warm_start = sampler_kwargs, bool(warm_start)
        self.n_chains, self.explore_chains = n_chains, explore_chains
        self.use_proposal, self.n_candidates, self.defensive = bool(proposal), n_candidates, defensive
        self.compile_act, self.deterministic_act = compile_act, deterministic_act
        n_chains = n_chains or (1 if proposal else 16)
        self._n_explore = explore_chains or (n_chains if sampler == "dfo" else 1)
        self._build(lr_schedule, temperature, n_chains)

    def _build(self, lr_schedule: Schedule, temperature: float, n_chains: int) -> None:
        """The networks, their optimisers and the Boltzmann policy, from the checked settings."""
        activation, n_critics, step_size = self.activation, self.n_critics, self.step_size
        self.features_extractor = self.make_features_extractor()
        self.obs_dim = get_flattened_obs_dim(self.observation_space)
        self.act_dim = int(self.action_space.shape[0])
        self.critics = nn.ModuleList(
            StateActionEnergy(self.obs_dim, self.act_dim, self.net_arch, activation,
                              layer_norm=self.critic_layer_norm)
            for _ in range(n_critics)
        )
        self.critic_targets = copy.deepcopy(self.critics)
        self.critic_targets.requires_grad_(False)
        self.critic_targets.train(False)
        self.proposal: TanhGaussianProposal | None = None
        self.proposal_optimizer: torch.optim.Optimizer | None = None
        if self.use_proposal:
            self.proposal = TanhGaussianProposal(self.obs_dim, self.act_dim, self.net_arch, activation)
            self.proposal_optimizer = make_optimizer(
                self.optimizer_class, self.proposal.parameters(), lr_schedule(1), self.optimizer_kwargs
            )
        # Not a registered submodule: it holds no parameters of its own.
        self.__dict__["_energy"] = (
            PessimisticEnergy(self.critics) if self.policy_energy == "min" else self.critics[0]
        )
        self.boltzmann = BoltzmannPolicy(
            self._energy,
            make_sampler(self.sampler_kind, self.search_steps, step_size, self.sampler_kwargs),
            temperature=temperature,
            n_chains=n_chains,
            warm_start=self.warm_start,
            proposal=self.proposal,
            n_candidates=self.n_candidates,
            defensive=self.defensive,
            compile_act=self.compile_act is True,
        )
        # The MALA step scale the Boltzmann policy adapts between calls: a buffer, so that a saved
        # model acts (and its deterministic mode answers) exactly as before saving.
        self.register_buffer("log_step_scale", self.boltzmann.log_step_scale)
        self.boltzmann.log_temperature = self.log_temperature
        self.optimizer = make_optimizer(
            self.optimizer_class, self.critics.parameters(), lr_schedule(1), self.optimizer_kwargs
        )

    @staticmethod
    def check_kwargs(**kwargs: Any) -> None:
        """Validate constructor arguments without building anything (the algorithm calls this on
        ``policy_kwargs`` before it creates any state)."""
        SoftQPolicy.check_kwargs(**kwargs)
        if "n_critics" in kwargs:
            check_int("n_critics", kwargs["n_critics"], minimum=1)
        check_layer_norm("critic_layer_norm", kwargs.get("critic_layer_norm", False))
        if "policy_energy" in kwargs:
            check_choice("policy_energy", kwargs["policy_energy"], ["min", "first"])
        if kwargs.get("n_chains") is not None:
            check_int("n_chains", kwargs["n_chains"], minimum=1)
        if kwargs.get("explore_chains") is not None:
            check_int("explore_chains", kwargs["explore_chains"], minimum=1)
        if "n_candidates" in kwargs:
            check_int("n_candidates", kwargs["n_candidates"], minimum=1)
        if "defensive" in kwargs:
            check_fraction("defensive", kwargs["defensive"], allow_none=False)
        act = check_choice("deterministic_act", kwargs.get("deterministic_act", "mean"), DETERMINISTIC_ACTS)
        if act == "proposal" and not kwargs.get("proposal", True):
            raise ValueError("deterministic_act='proposal' needs a learned proposal, got proposal=False")
        compile_act = kwargs.get("compile_act", "auto")
        if not (isinstance(compile_act, bool) or compile_act == "auto"):
            raise ValueError(f"compile_act must be True, False or 'auto', got {compile_act!r}")
        make_sampler(
            kwargs.get("sampler", "mala"),
            resolve_search_steps(kwargs.get("search_steps", 3), kwargs.get("n_steps")),
            kwargs.get("step_size"),
            kwargs.get("sampler_kwargs"),
        )

    @property
    def energy(self) -> Energy:
        """The energy the Boltzmann policy samples (hand it to any head): -min_i Q_i(s, a) with
        ``policy_energy="min"``, the first critic -Q_1(s, a) with ``"first"``."""
        return self._energy

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            n_critics=self.n_critics, critic_layer_norm=self.critic_layer_norm,
            policy_energy=self.policy_energy, sampler=self.sampler_kind,
            search_steps=self.search_steps, step_size=self.step_size,
            sampler_kwargs=self.sampler_kwargs, warm_start=self.warm_start,
            n_chains=self.n_chains, explore_chains=self.explore_chains,
            proposal=self.use_proposal, n_candidates=self.n_candidates, defensive=self.defensive,
            compile_act=self.compile_act, deterministic_act=self.deterministic_act,
        )
        return data

    def states(self, obs: PyTorchObs) -> Tensor:
        """The flat float state vector the energies take."""
        return self.extract_features(obs, self.features_extractor)

    def q_values(self, states: Tensor, actions: Tensor, target: bool = False) -> Tensor:
        """Q_i(s, a) = -E_i(s, a) of every critic (or target critic), stacked: ``(n_critics, ...)``.

        On CUDA the critics run as one batched pass (:func:`ebrl.energies.ensemble_energy`: half
        the kernel launches); on one CPU thread a loop over the critics measured ~10 % faster than
        batched matmuls for 2 x 256 critics at 256-1024 rows, so the CPU keeps the loop.
        """
        nets = self.critic_targets if target else self.critics
        if states.device.type == "cuda":
            return -ensemble_energy(list(nets), states, actions)
        return torch.stack([-net(states, actions) for net in nets])

    def train(self, mode: bool = True) -> SQLPolicy:
        """Set the training flag of every submodule. SB3 calls this twice per env step (before
        predict and before train()); nn.Module's recursive walk through ``__setattr__`` cost
        ~0.3 ms per call for these ~45 modules, so the flags are written directly."""
        modules = self.__dict__.get("_module_list")
        if modules is None:
            modules = self.__dict__["_module_list"] = list(self.modules())
        for module in modules:
            module.__dict__["training"] = mode
        return self

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> Tensor:
        states = check_finite("observation", self.states(observation))
        # Buffers are replaced when the module moves device: point the Boltzmann policy at the
        # current ones (alpha and the step scale are stored here, once).
        self.boltzmann.log_temperature = self.log_temperature
        self.boltzmann.log_step_scale = self.log_step_scale
        if deterministic and self.deterministic_act == "proposal":
            return self.proposal.mode(states)
        if deterministic and self.deterministic_act == "mean":
            fixed = torch.Generator(device=states.device).manual_seed(FIXED_INIT_SEED)
            return self.boltzmann.mean_action(states, n=MEAN_DRAWS, generator=fixed)
        # SB3 predicts under no_grad; the search needs input gradients of the energy.
        with torch.enable_grad():
            if deterministic:
                # Noise-free search from one fixed set of starts shared by all states.
                return self.boltzmann.mode(states)
            return self.boltzmann.sample(states, n=self._n_explore)[:, 0]

    def plan_acting(self, run_steps: int) -> None:
        """With ``compile_act="auto"``: act through the compiled function from the first run that
        reaches ``COMPILE_ACT_MIN_STEPS`` env steps on (called by ``SQL.learn``). Once switched on
        it stays on: the compile is paid, so later short runs and ``predict`` reuse it."""
        if self.compile_act == "auto" and run_steps >= COMPILE_ACT_MIN_STEPS:
            self.boltzmann.compile_act = True

    def reset_chains(self, mask: Tensor | None = None) -> None:
        """Restart warm-started chains (all, or the env rows where ``mask`` is True)."""
        try:
            self.boltzmann.reset_chains(mask)
        except ValueError:
            # The persistent chains were last used with another batch size (e.g. an evaluation
            # on a different number of envs): start them all afresh.
            self.boltzmann.reset_chains(None)


MlpPolicy = SQLPolicy
