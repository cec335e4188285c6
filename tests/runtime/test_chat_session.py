"""Chat sessions and prefix reuse: a turn runs only its new tokens and gives what a fresh prefill gives."""

import numpy as np
import pytest

import edgelm
from edgelm.chat_template import ChatTemplate
from edgelm.prefix_cache import PrefixCache, common_prefix

GREEDY = dict(max_new_tokens=12, eos_token_ids=())  # a fixed number of tokens, whatever they are
TURNS = ["Hello there, who are you?", "Tell me more.", "Thanks!"]
TEXT = "Caches must give exactly what a full pass gives, step by step or chunk by chunk."


@pytest.fixture(scope="module", params=[("llama", "auto"), ("llama", "optimum")], ids=["fused", "generic"])
def model(request, exported):
    return edgelm.load(exported(request.param[0], "fp32", request.param[1]))


@pytest.fixture
def counted(model, monkeypatch):
    """Counts the tokens the graph actually runs."""
    runs = []
    forward = model.runner.forward

    def counting(input_ids, cache, all_logits=False, logits=True):
        runs.append(input_ids.shape[1])
        return forward(input_ids, cache, all_logits, logits)

    monkeypatch.setattr(model.runner, "forward", counting)
    return runs


def fresh_tokens(model, messages, **settings):
    """The reply's tokens from a new cache: the whole conversation prefilled."""
    return list(model.generate_ids(model.chat_ids(messages), model.config(**settings), model.runner.new_cache()))


def test_a_truncated_cache_continues_like_a_full_pass(model):
    ids = np.array([model.encode(TEXT)], dtype=np.int64)
    full = model.runner.forward(ids, model.runner.new_cache(), all_logits=True)[0]
    cache = model.runner.new_cache()
    model.runner.forward(ids, cache)
    assert cache.tokens == ids[0].tolist()
    cache.truncate(10)
    assert cache.length == 10 and cache.tokens == ids[0, :10].tolist()
    rest = model.runner.forward(ids[:, 10:], cache, all_logits=True)[0]
    np.testing.assert_allclose(rest, full[10:], atol=1e-4, rtol=0)


def test_each_turn_gives_the_tokens_of_a_fresh_prefill_and_runs_only_new_tokens(model, counted):
    session = model.chat_session(system="Be brief.", **GREEDY)
    for turn, text in enumerate(TURNS):
        held = list(session.cache.tokens)  # what the cache holds before this turn
        messages = [*session.messages, {"role": "user", "content": text}]
        ids = model.chat_ids(messages)
        expected = fresh_tokens(model, messages, **GREEDY)
        counted.clear()
        session.send(text)
        assert model.last_timings.generated_tokens == len(expected) == GREEDY["max_new_tokens"]
        assert session.cache.tokens[len(ids):] == expected[:-1]  # exactly the fresh prefill's tokens
        reused = min(common_prefix(held, ids), len(ids) - 1)
        assert counted[0] == len(ids) - reused  # the prefill ran only the tokens past the cached prefix
        assert model.last_timings.cached_tokens == reused
        if turn:
            assert reused >= len(previous_ids)  # at least the whole previous prompt came from the cache
        previous_ids = ids


def test_turn_two_reuses_the_whole_cache_when_the_reply_tokenizes_back(model, counted):
    session = model.chat_session(max_new_tokens=6, eos_token_ids=())
    session.send("Hi")
    first_prompt = model.chat_ids(session.messages[:-1])
    held = list(session.cache.tokens)  # turn 1's prompt and its reply but the last token (never run)
    assert len(held) == len(first_prompt) + 5
    reply_ids = model.encode(session.messages[-1]["content"], add_special_tokens=False)
    counted.clear()
    session.send("More")
    ids = model.chat_ids(session.messages[:-1])
    if reply_ids[:5] == held[len(first_prompt):]:  # plain characters: the char tokenizer gives them back
        assert counted[0] == len(ids) - len(held)  # only the reply's last token, the turn's end and turn 2


def test_a_template_that_rewrites_earlier_turns_still_gives_fresh_prefill_tokens(model, counted):
    # the first line counts the messages, so every turn changes the very start of the prompt
    source = "{{ messages|length }} messages\n{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n" \
             "{% endfor %}<|assistant|>"
    model._chat_template = ChatTemplate(source, "<s>", "</s>")
    try:
        session = model.chat_session(**GREEDY)
        session.send("Hello")
        messages = [*session.messages, {"role": "user", "content": "Again"}]
        expected = fresh_tokens(model, messages, **GREEDY)
        counted.clear()
        session.send("Again")
        ids = model.chat_ids(messages)
        assert session.cache.tokens[len(ids):] == expected[:-1]
        assert model.last_timings.cached_tokens == common_prefix(ids, model.chat_ids(messages[:2])) < 5
    finally:
        model._chat_template = None


def test_chat_reuses_a_recent_cache_and_gives_the_same_reply(model, counted):
    model.prefix_cache.clear()
    messages = [{"role": "user", "content": "What is a cache?"}]
    first = model.chat(messages, **GREEDY)
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "Say it again."}]
    expected = model.decode(fresh_tokens(model, messages, **GREEDY))
    counted.clear()
    assert model.chat(messages, **GREEDY) == expected
    assert model.last_timings.cached_tokens >= len(model.chat_ids(messages[:1]))
    assert counted[0] == len(model.chat_ids(messages)) - model.last_timings.cached_tokens
    assert len(model.prefix_cache) == 1  # the cache was taken, extended and put back


def test_reset_keeps_the_system_prompt_and_a_cut_reply_joins_the_conversation(model):
    session = model.chat_session(system="Be brief.", **GREEDY)
    pieces = session.stream("Hello")
    first = next(pieces)
    pieces.close()
    assert session.messages[-1] == {"role": "assistant", "content": first}
    session.reset()
    assert session.messages == [{"role": "system", "content": "Be brief."}]
    session.send("Hi")
    assert model.last_timings.cached_tokens > 0  # the system prompt's tokens are still cached


def test_a_new_turn_ends_a_reply_still_streaming_and_its_own_reply_is_a_fresh_prefills(model):
    """send() while the last turn's stream is open: that reply ends where it stood, as closing it would."""
    session = model.chat_session(**GREEDY)
    pieces = session.stream(TURNS[0])
    first = next(pieces)
    messages = [{"role": "user", "content": TURNS[0]}, {"role": "assistant", "content": first},
                {"role": "user", "content": TURNS[1]}]
    expected = model.decode(fresh_tokens(model, messages, **GREEDY))
    assert session.send(TURNS[1]) == expected  # as if the cut reply had been closed, then this turn sent
    assert session.messages == [*messages, {"role": "assistant", "content": expected}]
    assert list(pieces) == []  # the old stream yields nothing more, and writes nothing into the conversation
    assert session.messages[-1] == {"role": "assistant", "content": expected}


def test_a_failed_turn_leaves_the_conversation_as_it_was(model):
    session = model.chat_session()
    with pytest.raises(edgelm.EdgelmError, match="context holds"):
        session.send("x" * (model.manifest.context_length + 10))
    assert session.messages == []


def test_the_prefix_cache_is_bounded_in_count_and_bytes(model):
    runner = model.runner
    caches = PrefixCache(runner.new_cache, max_caches=2)
    prompts = [model.encode(t) for t in ("first prompt", "second prompt", "third prompt")]
    for ids in prompts:
        cache = caches.take(ids)
        runner.forward(np.array([ids]), cache)
        caches.put(cache)
    assert len(caches) == 2
    assert caches.take(prompts[0]).tokens == []  # the oldest was dropped: a new cache
    reused = caches.take(prompts[2] + [5])
    assert reused.tokens == prompts[2] and len(caches) == 1  # taken out while in use
    one = reused.nbytes
    caches = PrefixCache(runner.new_cache, max_bytes=one)
    caches.put(reused)
    other = runner.new_cache()
    runner.forward(np.array([prompts[1]]), other)
    caches.put(other)
    assert len(caches) == 1 and caches.nbytes <= one


def test_edgelm_chat_keeps_the_cache_and_says_so_on_the_second_turn(exported):
    from tests.runtime.test_cli import run

    result = run("chat", str(exported("llama", "fp32")), "-n", "4", stdin="Hi\nHow are you?\n/reset\nHi\n/exit\n")
    assert result.returncode == 0, result.stderr
    timings = [line for line in result.stderr.splitlines() if "first token" in line]
    assert len(timings) == 3
    assert "cached" not in timings[0] and "cached)" in timings[1]  # turn 2 reused turn 1's tokens
    assert "cached)" in timings[2]  # after /reset the start of the template is still cached
