"""The system's view of items, users and histories, compiled (``Simulator.item_features``,
``Simulator.user_features``, the system role's history). Columns are written by name
(``out[i, d + col.ctr]``), at the places ``marl_rec.envs.features`` gives them.

The places are an argument (``ITEM_COLUMNS_AT``, ...), read from ``features`` by name at run
time, not globals frozen into the compiled code: numba's cache keys a kernel on its own file,
so a change of the columns in features.py would otherwise meet a stale cached kernel."""

from __future__ import annotations

import math
from collections import namedtuple

from marl_rec.envs.compiled import jit
from marl_rec.envs.features import HISTORY_OFFSET, ITEM_OFFSET, ORACLE_ITEM_OFFSET, USER_OFFSET
from marl_rec.envs.views import CatalogueView

# the columns the kernels write, each one's place after the d embedding (or interest) columns
ItemColumnsAt = namedtuple("ItemColumnsAt", "length age log_impressions ctr watch_per_click creator_share "
                                            "creator_on_platform quality")
UserColumnsAt = namedtuple("UserColumnsAt", "session_progress ctr last_watch watch_total")


def columns_at(columns_type, *offsets) -> tuple:
    """The places of ``columns_type``'s fields, by name from ``features``' offsets (a plain tuple:
    what the kernels take); a column that ``features`` no longer names is a KeyError here."""
    places = {}
    for offset in offsets:
        places.update(offset._asdict())
    return tuple(places[name] for name in columns_type._fields)


ITEM_COLUMNS_AT = columns_at(ItemColumnsAt, ITEM_OFFSET, ORACLE_ITEM_OFFSET)
USER_COLUMNS_AT = columns_at(UserColumnsAt, USER_OFFSET)
HISTORY_WATCH_AT = HISTORY_OFFSET.watch

# what the item columns are scaled by, and whether the true quality is shown
ItemScales = namedtuple("ItemScales", "length_mean age_scale oracle")
# what the user columns are scaled by (config.max_cycles, config.item.length_mean, config.user.time_budget)
UserScales = namedtuple("UserScales", "max_cycles length_mean time_budget")
# what the user columns read of the users (a pick of their view: marl_rec.envs.views.pick)
FeatureUsers = namedtuple("FeatureUsers", "session_length clicks slates_seen history_watch watch_total")


@jit
def _mean_exposure(exposure_total, active):
    """The mean episode exposure over the creators still on the platform."""
    n_active, exposure = 0, 0.0
    for c in range(len(active)):
        if active[c]:
            n_active += 1
            exposure += exposure_total[c]
    return exposure / max(n_active, 1)


@jit
def item_features(slots, t, catalogue, exposure_total, creator_active, scales, columns, out):
    """What the system sees of items ``slots`` (flat), one row each in ``out`` (n, F): the
    embedding, then the columns of ``marl_rec.envs.features.ITEM_COLUMNS``, then quality when
    ``oracle`` (``Catalogue.view``, the creators' episode exposure and presence, ``ItemScales``,
    ``ITEM_COLUMNS_AT``)."""
    cat, scale, col = CatalogueView(*catalogue), ItemScales(*scales), ItemColumnsAt(*columns)
    d = cat.embedding.shape[1]
    mean_exposure = _mean_exposure(exposure_total, creator_active)
    for i in range(len(slots)):
        s = slots[i]
        for j in range(d):
            out[i, j] = cat.embedding[s, j]
        shown, clicked = cat.impressions[s], cat.clicks[s]
        out[i, d + col.length] = cat.length[s] / scale.length_mean
        out[i, d + col.age] = (t - cat.birth[s]) / scale.age_scale
        out[i, d + col.log_impressions] = math.log1p(shown) / 5.0
        out[i, d + col.ctr] = (clicked + 1.0) / (shown + 2.0)
        out[i, d + col.watch_per_click] = cat.watch_time[s] / max(clicked, 1.0) / scale.length_mean
        c = cat.creator[s]
        if c < 0:
            out[i, d + col.creator_share], out[i, d + col.creator_on_platform] = 0.0, 0.0
        else:
            out[i, d + col.creator_share] = exposure_total[c] / mean_exposure if mean_exposure > 0 else 1.0
            out[i, d + col.creator_on_platform] = 1.0 if creator_active[c] else 0.0
        if scale.oracle:
            out[i, d + col.quality] = cat.quality[s]


@jit
def user_features(interest, users, scales, columns, out):
    """What the system sees of each user, ``out`` (U, d + 4): the ``interest`` given (the running
    estimate unless oracle), then the columns of ``features.USER_COLUMNS`` (``FeatureUsers``,
    ``UserScales``, ``USER_COLUMNS_AT``)."""
    users, scale, col = FeatureUsers(*users), UserScales(*scales), UserColumnsAt(*columns)
    d = interest.shape[1]
    for u in range(len(interest)):
        for j in range(d):
            out[u, j] = interest[u, j]
        out[u, d + col.session_progress] = users.session_length[u] / scale.max_cycles
        out[u, d + col.ctr] = users.clicks[u] / (users.slates_seen[u] + 1.0)
        out[u, d + col.last_watch] = users.history_watch[u, 0] / scale.length_mean
        out[u, d + col.watch_total] = users.watch_total[u] / scale.time_budget


@jit
def history_view(idx, history_embedding, history_watch, history_uid, length_mean, watch_at, history, mask):
    """Users ``idx``'s consumed items as the system sees them: embedding, then
    ``features.HISTORY_COLUMNS`` (watch / length_mean at ``HISTORY_WATCH_AT``) per row of
    ``history`` (n, H, d + 1); ``mask`` 1 where a row holds an item."""
    d = history_embedding.shape[2]
    for i in range(len(idx)):
        u = idx[i]
        for h in range(history_uid.shape[1]):
            for j in range(d):
                history[i, h, j] = history_embedding[u, h, j]
            history[i, h, d + watch_at] = history_watch[u, h] / length_mean
            mask[i, h] = 1.0 if history_uid[u, h] >= 0 else 0.0
