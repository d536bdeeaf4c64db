"""Sampling, vectorised over a batch with different settings per row: greedy at temperature 0, top-k 1
and a tiny top-p are greedy too, top-k and top-p keep exactly the right tokens, draws follow the
softmax, a seed reproduces a draw, and the returned log-probabilities are the model's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemma_runtime.serve.sampling import SamplingParams, batch_arrays, filter_logits, sample

# numpy at import time: creating a JAX array during collection would start JAX's threads before the
# cluster tier forks its processes.
LOGITS = np.log(np.asarray([[0.5, 0.25, 0.15, 0.1], [0.1, 0.2, 0.3, 0.4]], np.float32))


def _keys(n: int, seed: int = 0) -> jax.Array:
    return jax.random.split(jax.random.PRNGKey(seed), n)


def test_greedy_rows_and_sampled_rows_in_one_batch() -> None:
    temperature, top_k, top_p = batch_arrays([SamplingParams(temperature=0), SamplingParams(top_k=1)])
    tokens, logprobs = sample(LOGITS, temperature, top_k, top_p, _keys(2))
    assert tokens.tolist() == [0, 3]
    np.testing.assert_allclose(np.exp(np.asarray(logprobs)), [0.5, 0.4], rtol=1e-5)


def test_top_k_and_top_p_keep_the_right_tokens() -> None:
    kept = filter_logits(LOGITS, jnp.asarray([2, 0]), jnp.asarray([1.0, 0.65]))
    assert (np.asarray(kept) > -1e29).tolist() == [[True, True, False, False], [False, False, True, True]]
    tiny = filter_logits(LOGITS, jnp.asarray([0, 0]), jnp.asarray([1e-6, 1e-6]))
    assert (np.asarray(tiny) > -1e29).sum(axis=-1).tolist() == [1, 1]


def test_draws_follow_the_softmax_and_a_seed_reproduces_them() -> None:
    n = 4000
    logits = jnp.broadcast_to(LOGITS[0], (n, 4))
    ones = jnp.ones((n,))
    tokens, _ = sample(logits, ones, jnp.zeros((n,), jnp.int32), ones, _keys(n, seed=7))
    freq = np.bincount(np.asarray(tokens), minlength=4) / n
    np.testing.assert_allclose(freq, [0.5, 0.25, 0.15, 0.1], atol=0.03)
    again, _ = sample(logits, ones, jnp.zeros((n,), jnp.int32), ones, _keys(n, seed=7))
    assert (np.asarray(again) == np.asarray(tokens)).all()


def test_low_temperature_sharpens() -> None:
    n = 2000
    logits = jnp.broadcast_to(LOGITS[0], (n, 4))
    tokens, _ = sample(
        logits, jnp.full((n,), 0.1), jnp.zeros((n,), jnp.int32), jnp.ones((n,)), _keys(n, seed=3)
    )
    assert (np.asarray(tokens) == 0).mean() > 0.99


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": -1}, "temperature"), ({"top_k": -2}, "top_k"), ({"top_p": 0}, "top_p")],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)
