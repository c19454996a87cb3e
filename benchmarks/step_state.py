"""The train state a benchmark's step starts from: what janus.train builds, on a data mesh over
every device (shared by train_step.py and contrastive_accum.py)."""

from __future__ import annotations


def make_state(c):
    """-> (model, tx, schedule, mesh, state, shardings) for config `c` (steps: 1000, warmup 10)."""
    import jax

    from janus import optim, sharding, train_step

    tx, schedule = optim.make_optimizer(c.optimizer, 1000, 10)
    model = train_step.build_model(c)
    init_fn = train_step.make_init_fn(model, tx, c)
    mesh = sharding.make_mesh([("data", -1)])
    shardings = sharding.param_shardings(jax.eval_shape(init_fn), mesh)
    state = jax.jit(init_fn, out_shardings=shardings)()
    return model, tx, schedule, mesh, state, shardings
