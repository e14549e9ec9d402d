"""Parts with contracts: params schemas, names resolved up front, role hooks and rewards,
per-role reward_mix, behaviours acting from observations, and every registered part run once."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from marl_rec.envs import BEHAVIOURS, ROLES, ConfigError, Role, RoundRunner, make_config
from marl_rec.envs.config import _Section, spec
from marl_rec.envs.features import OBSERVATIONS, item_column, item_columns, shape_of, symbol_sizes
from marl_rec.envs.roles import observation_table
from marl_rec.envs.parts.base import Behaviour, Reward
from marl_rec.envs.part_kinds import PART_KINDS
from marl_rec.envs.registry import REWARDS

ROOT = Path(__file__).resolve().parents[1]
# small enough to run in milliseconds; num_topics == embedding_dim so 'recsim_utility' fits too,
# catalogue_size >= num_users * num_candidates so 'resample' does
SMALL = {"num_users": 3, "num_creators": 2, "num_topics": 4, "embedding_dim": 4, "num_candidates": 6,
         "slate_size": 2, "history_length": 3, "catalogue_size": 64, "max_cycles": 6}


# ---------------------------------------------------------------- plug-ins used below
@REWARDS.register("scaled_watch")
class ScaledWatchReward(Reward):
    """Team reward: weight × total minutes watched this round."""

    @dataclass(frozen=True)
    class Params(_Section):
        weight: float = spec(1.0, "minutes watched to reward", low=0.0)

    def __call__(self, sim):
        return self.params.weight * float(sim.state.round.watch_time.sum()), {}, {}


@ROLES.register("sponsor")
class SponsorRole(Role):
    """One sponsor that pays ``price`` per click, in a phase of its own at the end of the round.
    Its individual reward has a side effect (the revenue it books), and it records its hooks."""

    name = "sponsor"
    phase = "sponsor"
    default_behaviour = "no_sponsoring"

    @dataclass(frozen=True)
    class Params(_Section):
        price: float = spec(1.0, "paid per click", low=0.0)

    def __init__(self, config, params=None):
        super().__init__(config, params)
        self.calls: list[str] = []
        self.revenue = 0.0

    def num_agents(self):
        return 1

    def make_observation_space(self):
        return spaces.Dict({"clicks": spaces.Box(0.0, 1e6, (1,), np.float32)})

    def make_action_space(self):
        return spaces.Discrete(2)

    def observe(self, sim, idx):
        clicks = np.count_nonzero(sim.state.round.clicked_slot >= 0)
        return {"clicks": np.full((len(idx), 1), clicks, np.float32)}

    def noop_actions(self, sim):
        return np.zeros(1, np.int64)

    def apply(self, sim, actions):
        self.calls.append("apply")

    def reset(self, sim, rng):
        self.calls.append("reset")
        self.revenue = 0.0

    def individual_reward(self, sim):
        self.calls.append("reward")
        paid = self.params.price * np.count_nonzero(sim.state.round.clicked_slot >= 0)
        self.revenue += paid
        return np.array([-paid])

    def end_round(self, sim):
        self.calls.append("end_round")


@BEHAVIOURS.register("no_sponsoring")
class NoSponsoring(Behaviour):
    role = "sponsor"

    def act(self, sim, rng):
        return np.zeros(1, np.int64)


def runner_for(overrides=None, seed=0, **more) -> RoundRunner:
    runner = RoundRunner(make_config("creator_economy", {**SMALL, **(overrides or {}), **more}, source="exp.yaml"))
    runner.reset(seed=seed)
    return runner


def noop_step(runner: RoundRunner):
    """One runner step with every acting agent taking its role's no-op action."""
    actions = {}
    for agent in runner.acting_agents():
        name, i = runner.agent_role[agent]
        actions[agent] = runner.roles[name].noop_actions(runner.sim)[i]
    return runner.step(actions)


def play(runner: RoundRunner, rounds: int) -> list:
    outcomes = []
    while not runner.done and sum(o.rounds_completed for o in outcomes) < rounds:
        outcomes.append(noop_step(runner) if runner.external else runner.play_round())
    return outcomes


# ---------------------------------------------------------------- every registered part runs
@pytest.mark.parametrize("kind, name", [(kind.kind, name) for kind in PART_KINDS for name in kind.registry.names()])
def test_every_registered_part_runs_an_episode(kind, name):
    key = next(k.name_key for k in PART_KINDS if k.kind == kind)
    runner = runner_for({key: name, "roles": []})
    play(runner, 4)
    assert runner.sim.state.t >= 1 and np.isfinite(runner.sim.team_return)


@pytest.mark.parametrize("name", BEHAVIOURS.names())
def test_every_registered_behaviour_runs_an_episode(name):
    role = BEHAVIOURS.get(name).role
    runner = runner_for({"roles": [], "behaviours": {role: name}})
    assert type(runner.behaviours[role]) is BEHAVIOURS.get(name)
    play(runner, 4)
    assert runner.sim.state.t >= 1


@pytest.mark.parametrize("name", ROLES.names())
def test_every_registered_role_runs_an_episode_as_agents(name):
    runner = runner_for({"roles": [name]})
    assert name in runner.external
    outcomes = play(runner, 4)
    assert runner.sim.state.t >= 1
    assert any(a.startswith(name + "_") for o in outcomes for a in o.rewards)


# ---------------------------------------------------------------- names resolved in make_config
def test_unknown_part_name_names_the_key_and_the_closest_match():
    with pytest.raises(ConfigError, match=r"exp.yaml: 'user.choice_model': unknown choice model 'mnll'; "
                                          r"registered: (.*, )?mnl, proportional; did you mean 'mnl'\?; "
                                          r"if it comes from a plug-in"):
        make_config("creator_economy", {"user.choice_model": "mnll"}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"exp.yaml: 'behaviours.system': unknown behaviour model 'popularty'.*"
                                          r"did you mean 'popularity'\?"):
        make_config("creator_economy", {"behaviours": {"system": "popularty"}}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"exp.yaml: 'role_params': unknown role 'sponser'.*did you mean 'sponsor'"):
        make_config("creator_economy", {"role_params": {"sponser": {}}}, source="exp.yaml")


def test_a_behaviour_given_to_another_role_is_a_config_error():
    with pytest.raises(ConfigError,
                       match=r"exp.yaml: behaviours.user: 'popularity' acts for role 'system', not 'user'"):
        make_config("creator_economy", {"behaviours": {"user": "popularity"}}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"behaviours.creator: 'choice_model' acts for role 'user', not 'creator'"):
        make_config("creator_economy", {"behaviours": {"creator": "choice_model"}}, source="exp.yaml")


def test_settings_for_a_replaced_role_are_an_error():
    with pytest.raises(ConfigError, match=r"exp.yaml: 'behaviours.system' is given, "
                                          r"but \['platform'\] replaces role 'system'"):
        make_config("creator_economy", {"roles": ["platform"], "behaviours": {"system": "myopic"}}, source="exp.yaml")


def test_platform_takes_system_behaviours_with_their_slates_stacked():
    runner = runner_for({"roles": [], "behaviours": {"platform": "myopic"}})
    assert "system" not in runner.roles and set(runner.behaviours) == {"platform", "user", "creator"}
    play(runner, 2)
    assert runner.sim.state.round.slate.shape == (SMALL["num_users"], SMALL["slate_size"])


# ---------------------------------------------------------------- params schemas
def test_part_params_are_validated_and_reach_the_part():
    runner = runner_for({"reward": {"name": "scaled_watch", "params": {"weight": 0.5}}, "roles": []})
    assert runner.sim.reward_fn.params.weight == 0.5
    outcome = runner.play_round()
    assert outcome.rounds_completed == 1
    assert runner.sim.team_return == 0.5 * float(runner.sim.state.users.watch_total.sum())  # one round so far


def test_params_errors_name_the_key_and_the_allowed_keys():
    scaled = {"reward.name": "scaled_watch"}
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown key 'reward.params.wieght'; did you mean "
                                          r"'reward.params.weight'\?; allowed keys: reward.params.weight$"):
        make_config("creator_economy", {**scaled, "reward.params": {"wieght": 2.0}}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"exp.yaml: 'reward.params.weight' is -1.0; allowed values: a number >= 0.0"):
        make_config("creator_economy", {**scaled, "reward.params": {"weight": -1}}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"'reward.params.weight' must be a finite number"):
        make_config("creator_economy", {**scaled, "reward.params": {"weight": "heavy"}}, source="exp.yaml")
    # a built-in part that declares no params: any key is an error
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown key 'user.choice_params.temperature'; "
                                          r"allowed keys: \(none: it takes no parameters\)"):
        make_config("creator_economy", {"user.choice_params": {"temperature": 2.0}}, source="exp.yaml")


def test_behaviour_and_role_params():
    runner = runner_for({"roles": [], "behaviours": {"system": "popularity", "sponsor": "no_sponsoring"},
                         "behaviour_params": {"system": {"prior_impressions": 5}},
                         "role_params": {"sponsor": {"price": 2.5}}})
    assert runner.behaviours["system"].params.prior_impressions == 5.0
    assert runner.roles["sponsor"].params.price == 2.5
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown key 'behaviour_params.system.prior'; "
                                          r"allowed keys: behaviour_params.system.prior_impressions"):
        make_config("creator_economy", {"behaviours": {"system": "popularity"},
                                        "behaviour_params": {"system": {"prior": 5}}}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"'role_params.sponsor.price' is -2.0; allowed values: a number >= 0.0"):
        make_config("creator_economy", {"behaviours": {"sponsor": "no_sponsoring"},
                                        "role_params": {"sponsor": {"price": -2}}}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"parameters are given for role 'sponsor', which is not in this env"):
        make_config("creator_economy", {"behaviour_params": {"sponsor": {}}}, source="exp.yaml")


# ---------------------------------------------------------------- role hooks and rewards
def test_a_simulated_role_gets_its_reward_computed_and_its_hooks_called():
    runner = runner_for({"roles": [], "behaviours": {"sponsor": "no_sponsoring"},
                         "role_params": {"sponsor": {"price": 2.5}}, "reward_mix": {"sponsor": 0.0}},
                        **{"user.time_budget": 1000.0})
    sponsor = runner.roles["sponsor"]
    assert runner.phases == ["recommend", "respond", "create", "sponsor"]
    assert sponsor.calls == ["reset"]
    play(runner, 5)
    assert sponsor.calls == ["reset"] + ["apply", "reward", "end_round"] * 5
    clicks = int(runner.sim.state.users.clicks.sum())
    assert clicks > 0 and sponsor.revenue == 2.5 * clicks  # the reward's side effect, every round
    assert runner.role_returns["sponsor"].tolist() == [-sponsor.revenue]  # alpha 0: its own reward only
    runner.reset(seed=1)
    assert sponsor.calls[-1] == "reset" and sponsor.revenue == 0.0


def test_an_external_role_gets_the_same_hooks_and_its_mixed_reward():
    runner = runner_for({"roles": ["sponsor"], "reward_mix": 0.5}, **{"user.time_budget": 1000.0})
    sponsor = runner.roles["sponsor"]
    outcome = noop_step(runner)  # ends round 1, then runs round 2's simulated phases up to the sponsor's
    assert outcome.rounds_completed == 1 and sponsor.calls == ["reset", "apply", "reward", "end_round"]
    paid = sponsor.revenue  # price 1 per click of round 1
    info = outcome.infos["sponsor_0"]
    assert info["individual_reward"] == -paid and info["team_reward"] == runner.sim.team_return
    assert outcome.rewards["sponsor_0"] == 0.5 * info["team_reward"] + 0.5 * -paid


def test_reward_mix_per_role():
    runner = runner_for({"roles": ["system", "user", "creator"], "reward_mix": {"default": 1.0, "creator": 0.0}},
                        **{"user.time_budget": 1000.0})
    rewards, infos = {}, {}
    for _ in range(3):  # one step per phase: a whole round
        outcome = noop_step(runner)
        rewards.update(outcome.rewards)
        infos.update(outcome.infos)
    team = runner.sim.state.round.team_reward
    for agent, reward in rewards.items():
        expected = infos[agent]["individual_reward"] if agent.startswith("creator_") else team
        assert reward == expected, agent
    with pytest.raises(ConfigError, match=r"exp.yaml: 'reward_mix' \(a mapping of role names and 'default'\): "
                                          r"unknown role 'creater'.*did you mean 'creator'"):
        make_config("creator_economy", {"reward_mix": {"creater": 0.5}}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"'reward_mix' names role 'platform', which is not in this env"):
        make_config("creator_economy", {"reward_mix": {"platform": 0.5}}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"'reward_mix.creator' is 2.0; allowed values: a number in \[0.0, 1.0\]"):
        make_config("creator_economy", {"reward_mix": {"creator": 2}}, source="exp.yaml")


def test_role_returns_are_in_the_end_of_episode_infos():
    runner = runner_for({"roles": ["system"], "max_cycles": 3})
    outcomes = play(runner, 3)
    assert runner.done
    last = outcomes[-1].infos["system_0"]
    assert set(last["role_returns"]) == {"system", "user", "creator"}
    assert last["role_returns"]["system"] == runner.role_returns["system"].tolist()
    assert runner.role_returns["system"][0] == pytest.approx(sum(o.rewards.get("system_0", 0.0) for o in outcomes))


# ---------------------------------------------------------------- behaviours from observations
def _ready_runner():
    runner = runner_for({"roles": []}, **{"user.time_budget": 1000.0})
    play(runner, 3)  # histories, clicks and impressions to score on
    assert runner.sim.state.users.active.all() and runner.sim.state.creators.active.all()
    return runner


@pytest.mark.parametrize("name", ["random", "popularity", "myopic", "choice_model", "viability_publisher"])
def test_act_on_observations_matches_act(name):
    """The same seed gives the same actions from the observations as from the simulator. For
    choice_model and ecosystem the observations carry float32 copies (behaviour_probs,
    viability, demand) of the float64 values act uses, so in general only the distribution is
    the same (a draw within ~1e-7 of a boundary may fall the other way); for this seed the
    actions agree exactly."""
    runner = _ready_runner()
    behaviour_cls = BEHAVIOURS.get(name)
    role = behaviour_cls.role
    behaviour = behaviour_cls(runner.config)
    sim = runner.sim
    observations = runner.roles[role].observe(sim, np.arange(runner.roles[role].num_agents()))
    assert behaviour_cls.can_act_on_observations()
    from_sim = behaviour.act(sim, np.random.default_rng(11))
    from_obs = behaviour.act_on_observations(observations, np.random.default_rng(11))
    np.testing.assert_array_equal(from_obs, from_sim)


def test_popularity_from_observations_skips_consumed_items():
    runner = _ready_runner()
    behaviour = BEHAVIOURS.get("popularity")(runner.config)
    observations = runner.roles["system"].observe(runner.sim, np.arange(SMALL["num_users"]))
    np.testing.assert_array_equal(behaviour.observation_scores(observations), behaviour.scores(runner.sim))


@pytest.mark.parametrize("name", ["oracle_myopic", "long_term", "no_sponsoring"])
def test_behaviours_that_need_the_state_say_so(name):
    runner = _ready_runner()
    behaviour = BEHAVIOURS.get(name)(runner.config)
    assert not type(behaviour).can_act_on_observations()
    with pytest.raises(NotImplementedError, match=f"behaviour '{name}' .* cannot act from observations alone"):
        behaviour.act_on_observations({}, np.random.default_rng(0))


# ---------------------------------------------------------------- features and the README table
def test_feature_columns_are_named_once():
    d = 8
    assert item_columns(d)[item_column("ctr", d)] == "ctr"
    assert item_column("quality", d) == len(item_columns(d, oracle=True)) - 1
    runner = _ready_runner()
    sim, cat = runner.sim, runner.sim.state.catalogue
    slots = sim.state.round.candidates
    features = sim.item_features(slots)
    dim = runner.config.embedding_dim
    np.testing.assert_array_equal(features[..., item_column("ctr", dim)],
                                  ((cat.clicks[slots] + 1.0) / (cat.impressions[slots] + 2.0)).astype(np.float32))
    np.testing.assert_array_equal(features[..., item_column("log_impressions", dim)],
                                  (np.log1p(cat.impressions[slots]) / 5.0).astype(np.float32))
    with pytest.raises(KeyError, match="no item feature column 'clicks'; columns: length, age"):
        item_column("clicks", dim)


@pytest.mark.parametrize("extra", [{}, {"oracle_observations": True, "state_in_observations": True}])
def test_observation_table_matches_the_spaces(extra):
    config = make_config("creator_economy", {**SMALL, **extra})
    sizes = symbol_sizes(config)
    for name, keys in OBSERVATIONS.items():
        space = ROLES.get(name)(config).observation_space
        expected = {o.key: shape_of(o.shape, sizes) for o in keys
                    if o.key != "state" or config.state_in_observations}
        if config.oracle_observations and "candidates" in expected:  # one more candidate column
            key = "candidates"
            expected[key] = expected[key][:-1] + (expected[key][-1] + 1,)
        assert {k: box.shape for k, box in space.spaces.items()} == expected, name


def test_readme_holds_the_observation_table():
    assert observation_table() in (ROOT / "README.md").read_text()


def test_envs_never_import_policies_ray_or_torch():
    code = ("import sys; from marl_rec.envs import ecosystem_v0; e = ecosystem_v0.env(roles=['system']); "
            "e.reset(seed=0); bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'torch') "
            "or m.startswith('marl_rec.policies')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
    for path in (ROOT / "envs").rglob("*.py"):
        for line in path.read_text().splitlines():
            assert not line.startswith(("from marl_rec.policies", "import marl_rec.policies")), path


def test_decay_rates_are_config_and_default_to_the_old_constants():
    config = make_config("creator_economy")
    assert (config.topic_demand_rate, config.user.interest_estimate_rate) == (0.1, 0.2)
    assert (1.0 - config.topic_demand_rate, 1.0 - config.user.interest_estimate_rate) == (0.9, 0.8)  # exact in binary


def test_decay_rates_exact_values():
    """Two users, one click (user 0 on a topic-1 item): demand and the interest estimate move by the rates."""
    runner = runner_for({"roles": [], "num_users": 2, "num_topics": 2, "embedding_dim": 2, "topic_demand_rate": 0.5,
                         "user.interest_estimate_rate": 0.25})
    sim = runner.sim
    s = sim.state
    s.topic_demand[:] = [0.5, 0.5]
    s.users.interest_estimate[:] = [[1.0, 0.0], [0.0, 0.0]]
    slot = sim.slate_slots()[0, 0]
    s.catalogue.topic[slot] = 1
    s.catalogue.embedding[slot] = [0.0, 1.0]
    sim.respond(np.array([0, SMALL["slate_size"]]))  # user 0 clicks position 0, user 1 nothing
    np.testing.assert_array_equal(s.topic_demand, [0.25, 0.75])
    np.testing.assert_array_equal(s.users.interest_estimate, [[0.75, 0.25], [0.0, 0.0]])
