"""The system's view of items, users and histories, compiled (``Simulator.item_features``,
``Simulator.user_features``, the system role's history). Columns are written by name, at the
places ``marl_rec.envs.features`` gives them (``ITEM_OFFSET.ctr``, ...)."""

from __future__ import annotations

import math
from collections import namedtuple

from marl_rec.envs.compiled import jit, step
from marl_rec.envs.features import HISTORY_OFFSET, ITEM_OFFSET, ORACLE_ITEM_OFFSET, USER_OFFSET
from marl_rec.envs.views import CatalogueView, CreatorsView, UsersView

# what the item columns are scaled by, and whether the true quality is shown
ItemScales = namedtuple("ItemScales", "length_mean age_scale oracle")
# what the user columns are scaled by (config.max_cycles, config.item.length_mean, config.user.time_budget)
UserScales = namedtuple("UserScales", "max_cycles length_mean time_budget")


@step
def _mean_exposure(cr):
    """The mean episode exposure over the creators still on the platform."""
    n_active, exposure = 0, 0.0
    for c in range(len(cr.active)):
        if cr.active[c]:
            n_active += 1
            exposure += cr.exposure_total[c]
    return exposure / max(n_active, 1)


@jit
def item_features(slots, t, catalogue, creators, scales, out):
    """What the system sees of items ``slots`` (flat), one row each in ``out`` (n, F): the
    embedding, then the columns of ``marl_rec.envs.features.ITEM_COLUMNS``, then quality when
    ``oracle`` (``Catalogue.view``, ``Creators.view``, ``ItemScales``)."""
    cat, cr, scale = CatalogueView(*catalogue), CreatorsView(*creators), ItemScales(*scales)
    col = ITEM_OFFSET
    d = cat.embedding.shape[1]
    mean_exposure = _mean_exposure(cr)
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
            out[i, d + col.creator_share] = cr.exposure_total[c] / mean_exposure if mean_exposure > 0 else 1.0
            out[i, d + col.creator_on_platform] = 1.0 if cr.active[c] else 0.0
        if scale.oracle:
            out[i, d + ORACLE_ITEM_OFFSET.quality] = cat.quality[s]


@jit
def user_features(interest, users, scales, out):
    """What the system sees of each user, ``out`` (U, d + 4): the ``interest`` given (the running
    estimate unless oracle), then the columns of ``features.USER_COLUMNS`` (``Users.view``,
    ``UserScales``)."""
    users, scale, col = UsersView(*users), UserScales(*scales), USER_OFFSET
    d = interest.shape[1]
    for u in range(len(interest)):
        for j in range(d):
            out[u, j] = interest[u, j]
        out[u, d + col.session_progress] = users.session_length[u] / scale.max_cycles
        out[u, d + col.ctr] = users.clicks[u] / (users.slates_seen[u] + 1.0)
        out[u, d + col.last_watch] = users.history_watch[u, 0] / scale.length_mean
        out[u, d + col.watch_total] = users.watch_total[u] / scale.time_budget


@jit
def history_view(idx, users, length_mean, history, mask):
    """Users ``idx``'s consumed items as the system sees them (``Users.view``): embedding, then
    ``features.HISTORY_COLUMNS`` (watch / length_mean) per row of ``history`` (n, H, d + 1);
    ``mask`` 1 where a row holds an item."""
    users = UsersView(*users)
    d = users.history_embedding.shape[2]
    for i in range(len(idx)):
        u = idx[i]
        for h in range(users.history_uid.shape[1]):
            for j in range(d):
                history[i, h, j] = users.history_embedding[u, h, j]
            history[i, h, d + HISTORY_OFFSET.watch] = users.history_watch[u, h] / length_mean
            mask[i, h] = 1.0 if users.history_uid[u, h] >= 0 else 0.0
