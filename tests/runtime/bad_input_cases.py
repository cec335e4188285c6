"""The runtime's bad-input catalogue: (id, case, expected outcome). Run by test_bad_inputs.py.

Each case takes a `Ctx` (a loaded tiny model, its folder, a way to copy and edit the folder)
and does one bad thing. See tests/catalogue.py for the outcome names.
"""

from __future__ import annotations

import json

import numpy as np

import edgelm
from edgelm.config import GenerationConfig

HELLO = "Hello"


# -- the manifest: broken, hostile or disagreeing with the graph ---------------------------------
def _manifest(edit):
    def case(ctx):
        edgelm.load(ctx.copy(edit))
    return case


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return data
    return edit


def _drop(key):
    def edit(data):
        del data[key]
        return data
    return edit


MANIFEST_CASES = [
    ("manifest-null", _manifest(lambda d: None)),
    ("manifest-list", _manifest(lambda d: [])),
    ("manifest-string", _manifest(lambda d: "edgelm")),
    ("manifest-empty-object", _manifest(lambda d: {})),
    ("format-version-string", _manifest(_set("format_version", "1"))),
    ("format-version-bool", _manifest(_set("format_version", True))),
    ("format-version-missing", _manifest(_drop("format_version"))),
    ("vocab-size-string", _manifest(_set("vocab_size", "99"))),
    ("vocab-size-negative", _manifest(_set("vocab_size", -1))),
    ("vocab-size-zero", _manifest(_set("vocab_size", 0))),
    ("vocab-size-bool", _manifest(_set("vocab_size", True))),
    ("vocab-size-float", _manifest(_set("vocab_size", 99.5))),
    ("vocab-size-below-graph", _manifest(_set("vocab_size", 50))),
    ("vocab-size-above-graph", _manifest(_set("vocab_size", 200))),
    ("context-length-zero", _manifest(_set("context_length", 0))),
    ("prefill-min-tokens-zero", _manifest(_set("prefill_min_tokens", 0))),
    ("prefill-min-tokens-string", _manifest(_set("prefill_min_tokens", "16"))),
    ("prefill-logits-string", _manifest(_set("prefill_logits", "no"))),
    ("export-revision-zero", _manifest(_set("export_revision", 0))),
    ("export-revision-string", _manifest(_set("export_revision", "2"))),
    ("context-length-string", _manifest(_set("context_length", "1024"))),
    ("kv-null", _manifest(_set("kv", None))),
    ("kv-list", _manifest(_set("kv", [2, 1, 16]))),
    ("kv-layers-above-graph", _manifest(_set("kv", "num_layers", 3))),
    ("kv-layers-below-graph", _manifest(_set("kv", "num_layers", 1))),
    ("kv-head-dim-disagrees", _manifest(_set("kv", "head_dim", 8))),
    ("kv-heads-disagree", _manifest(_set("kv", "num_kv_heads", 2))),
    ("kv-heads-string", _manifest(_set("kv", "num_kv_heads", "1"))),
    ("kv-dtype-disagrees", _manifest(_set("kv", "dtype", "float16"))),
    ("kv-dtype-unknown", _manifest(_set("kv", "dtype", "bogus"))),
    ("kv-name-template-index", _manifest(_set("kv", "past_key", "past_key_values.{0}.key"))),
    ("kv-name-template-attribute", _manifest(_set("kv", "past_key", "{layer.__class__}"))),
    ("kv-shared-buffer-string", _manifest(_set("kv", "shared_buffer", "yes"))),
    ("kv-unknown-key", _manifest(_set("kv", "rope", 1))),
    ("kv-int8-without-scales", _manifest(_set("kv", "dtype", "int8"))),
    ("kv-scales-on-a-float-cache", _manifest(_set("kv", "scales_file", "kv_scales.npy"))),
    ("kv-scales-file-dotdot", _manifest(lambda d: {**d, "kv": {**d["kv"], "dtype": "int8", "shared_buffer": True,
                                                                 "scales_file": "../scales.npy"}})),
    ("kv-float-twin-on-a-float-cache", _manifest(_set("kv", "float_graph_file", "model.onnx"))),
    ("kv-float-twin-dotdot", _manifest(lambda d: {**d, "kv": {**d["kv"], "dtype": "int8", "shared_buffer": True,
                                                                "scales_file": "kv_scales.npy",
                                                                "float_graph_file": "../model.onnx"}})),
    ("tokenizer-file-dotdot", _manifest(_set("tokens", "tokenizer_file", "../../../../../../etc/passwd"))),
    ("tokenizer-file-absolute", _manifest(_set("tokens", "tokenizer_file", "/etc/passwd"))),
    ("tokenizer-file-int", _manifest(_set("tokens", "tokenizer_file", 7))),
    ("graph-file-dotdot", _manifest(_set("graph_file", "../../../../../../etc/passwd"))),
    ("graph-file-int", _manifest(_set("graph_file", 5))),
    ("eos-ids-string", _manifest(_set("tokens", "eos_token_ids", "2"))),
    ("eos-ids-float", _manifest(_set("tokens", "eos_token_ids", [2.5]))),
    ("eos-ids-beyond-vocab", _manifest(_set("tokens", "eos_token_ids", [999]))),
    ("eos-ids-negative", _manifest(_set("tokens", "eos_token_ids", [-1]))),
    ("bos-id-string", _manifest(_set("tokens", "bos_token_id", "1"))),
    ("bos-token-int", _manifest(_set("tokens", "bos_token", 5))),
    ("tokens-null", _manifest(_set("tokens", None))),
    ("precision-unknown", _manifest(_set("precision", "int3"))),
    ("precision-null", _manifest(_set("precision", None))),
    ("graph-inputs-string", _manifest(_set("graph_inputs", "input_ids"))),
    ("graph-inputs-unknown-name", _manifest(_set("graph_inputs", ["input_ids", "token_type_ids"]))),
    ("graph-inputs-missing-mask", _manifest(_set("graph_inputs", ["input_ids"]))),
    ("logits-output-missing", _manifest(_set("logits_output", "scores"))),
    ("generation-defaults-string-temperature", _manifest(_set("generation_defaults", {"temperature": "hot"}))),
    ("generation-defaults-list", _manifest(_set("generation_defaults", [1]))),
    ("quantization-null", _manifest(_set("quantization", None))),
    ("unknown-top-level-key", _manifest(_set("flavour", "vanilla"))),
    ("model-type-int", _manifest(_set("model_type", 5))),
    ("parameters-negative", _manifest(_set("parameters", -5))),
]


# -- files of the folder ------------------------------------------------------------------------
def _manifest_bytes(ctx):
    folder = ctx.copy()
    (folder / "edgelm.json").write_bytes(b"\xff\xfe{not utf-8")
    edgelm.load(folder)


def _manifest_is_a_folder(ctx):
    folder = ctx.copy()
    (folder / "edgelm.json").unlink()
    (folder / "edgelm.json").mkdir()
    edgelm.load(folder)


def _tokenizer_symlink_outside(ctx):
    folder = ctx.copy()
    outside = folder.parent / "outside.json"
    outside.write_text((folder / "tokenizer.json").read_text())
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(outside)
    edgelm.load(folder)


def _graph_file_absolute(ctx):
    folder = ctx.copy()
    target = str(ctx.copy() / "model.onnx")  # a valid graph, but outside the folder
    data = json.loads((folder / "edgelm.json").read_text())
    data["graph_file"] = target
    (folder / "edgelm.json").write_text(json.dumps(data))
    edgelm.load(folder)


def _chat_template(path_value):
    def case(ctx):
        model = edgelm.load(ctx.copy(_set("tokens", "chat_template_file", path_value)))
        model.chat([{"role": "user", "content": "Hi"}], max_new_tokens=1)
    return case


def _chat_template_symlink(ctx):
    folder = ctx.copy()
    (folder / "chat_template.jinja").unlink()
    (folder / "chat_template.jinja").symlink_to("/etc/hostname")
    edgelm.load(folder).chat([{"role": "user", "content": "Hi"}], max_new_tokens=1)


def _chat_template_not_utf8(ctx):
    folder = ctx.copy()
    (folder / "chat_template.jinja").write_bytes(b"\xff\xfe{{ x }}")
    edgelm.load(folder).chat([{"role": "user", "content": "Hi"}], max_new_tokens=1)


def _chat_template_empty(ctx):
    folder = ctx.copy()
    (folder / "chat_template.jinja").write_text("")
    edgelm.load(folder).chat([{"role": "user", "content": "Hi"}], max_new_tokens=1)


def _nan_weights(ctx):
    folder = ctx.copy()
    data = folder / "model.onnx.data"
    data.write_bytes(np.full(data.stat().st_size // 4, np.nan, dtype=np.float32).tobytes())
    edgelm.load(folder).generate(HELLO, max_new_tokens=4)


def _tokenizer_beyond_vocab(ctx):
    from tokenizers import Tokenizer

    folder = ctx.copy()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.add_tokens(["<extra>"])  # gets id 99: one past the graph's vocabulary of 99
    tokenizer.save(str(folder / "tokenizer.json"))
    edgelm.load(folder).generate("<extra>", max_new_tokens=2)


FILE_CASES = [
    ("manifest-not-utf8", _manifest_bytes),
    ("manifest-is-a-folder", _manifest_is_a_folder),
    ("tokenizer-symlink-outside", _tokenizer_symlink_outside),
    ("graph-file-absolute", _graph_file_absolute),
    ("chat-template-file-absolute", _chat_template("/etc/passwd")),
    ("chat-template-file-dotdot", _chat_template("../../../../../../etc/passwd")),
    ("chat-template-file-missing", _chat_template("nothere.jinja")),
    ("chat-template-symlink-outside", _chat_template_symlink),
    ("chat-template-not-utf8", _chat_template_not_utf8),
    ("chat-template-renders-nothing", _chat_template_empty),  # once blamed the user's prompt as empty
    ("weights-all-nan", _nan_weights),
    ("tokenizer-added-token-beyond-vocab", _tokenizer_beyond_vocab),
]


# -- token ids and generation settings -----------------------------------------------------------
def _ids(ids):
    return lambda ctx: list(ctx.model.generate_ids(ids, ctx.model.config(max_new_tokens=2)))


def _gen(**settings):
    return lambda ctx: ctx.model.generate(HELLO, max_new_tokens=settings.pop("max_new_tokens", 3), **settings)


def _config(**settings):
    return lambda ctx: GenerationConfig(**settings)


def _tiny_temperature(ctx):
    greedy = ctx.model.generate(HELLO, max_new_tokens=4)
    return "ok" if ctx.model.generate(HELLO, max_new_tokens=4, temperature=1e-320) == greedy else "silent"


SETTING_CASES = [
    ("token-id-equal-to-vocab", _ids([1, 99])),
    ("token-id-negative", _ids([1, -1])),
    ("token-id-huge", _ids([1, 10**12])),
    ("token-id-string", _ids([1, "5"])),
    ("token-id-float", _ids([1, 5.5])),
    ("token-ids-not-a-list", _ids(5)),
    ("eos-token-ids-string", _gen(eos_token_ids="2")),
    ("eos-token-ids-letters", _gen(eos_token_ids=["a"])),
    ("eos-token-ids-int", lambda ctx: "ok" if ctx.model.config(eos_token_ids=5).eos_token_ids == (5,) else None),
    ("eos-token-ids-float", _gen(eos_token_ids=[2.7])),
    ("max-new-tokens-string", _gen(max_new_tokens="10")),
    ("max-new-tokens-float", _gen(max_new_tokens=1.5)),
    ("max-new-tokens-bool", _gen(max_new_tokens=True)),
    ("max-new-tokens-none-in-config", _config(max_new_tokens=None)),
    ("temperature-subnormal", _tiny_temperature),
    ("temperature-inf", _gen(temperature=float("inf"))),
    ("temperature-string", _gen(temperature="1")),
    ("top-k-float", _gen(temperature=1.0, top_k=2.5)),
    ("top-k-string", _gen(temperature=1.0, top_k="5")),
    ("min-p-string", _gen(temperature=1.0, min_p="0.1")),
    ("repetition-penalty-inf", _gen(repetition_penalty=float("inf"))),
    ("repetition-penalty-string", _gen(repetition_penalty="1.2")),
    ("seed-negative", _gen(temperature=1.0, seed=-1)),
    ("seed-string", _gen(temperature=1.0, seed="abc")),
    ("seed-float", _gen(temperature=1.0, seed=1.5)),
    ("seed-bool", _gen(temperature=1.0, seed=True)),
    ("stop-int", _gen(stop=5)),
    ("stop-list-of-int", _gen(stop=[5])),
    ("stop-bytes", _gen(stop=b"x")),
    ("config-a-dict", lambda ctx: ctx.model.generate(HELLO, {"max_new_tokens": 2})),
    ("prompt-none", lambda ctx: ctx.model.generate(None, max_new_tokens=2)),
    ("prompt-int", lambda ctx: ctx.model.generate(5, max_new_tokens=2)),
    ("prompt-bytes", lambda ctx: ctx.model.generate(b"Hello", max_new_tokens=2)),
    ("prompt-lone-surrogate", lambda ctx: ctx.model.generate("Hi \ud800", max_new_tokens=2)),
    ("prompt-empty", lambda ctx: ctx.model.generate("", max_new_tokens=2)),
    ("encode-none", lambda ctx: ctx.model.encode(None)),
    ("threads-negative", lambda ctx: edgelm.load(ctx.folder, threads=-1)),
    ("threads-string", lambda ctx: edgelm.load(ctx.folder, threads="2")),
    ("threads-beyond-cores", lambda ctx: edgelm.load(ctx.folder, threads=1000)),  # once a hang (1000 threads)
    ("regex-without-eos", _gen(regex="[0-9]{3}", eos_token_ids=[])),  # once an IndexError
    ("load-verify-corrupt-weights", lambda ctx: _verify_corrupt(ctx)),
]


def _verify_corrupt(ctx):
    folder = ctx.copy()
    data = folder / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[100:104] = np.float32(1e6).tobytes()  # one weight changed: the graph still runs
    data.write_bytes(bytes(raw))
    edgelm.load(folder, verify=True)


# -- chat messages and templates -----------------------------------------------------------------
def _chat(messages):
    return lambda ctx: ctx.model.chat(messages, max_new_tokens=2)


def _template(source):
    def case(ctx):
        from edgelm.chat_template import ChatTemplate

        ChatTemplate(source).render([{"role": "user", "content": "Hi"}])
    return case


CHAT_CASES = [
    ("chat-content-none", _chat([{"role": "user", "content": None}])),
    ("chat-content-int", _chat([{"role": "user", "content": 5}])),
    ("chat-role-none", _chat([{"role": None, "content": "Hi"}])),
    ("chat-role-empty", _chat([{"role": "", "content": "Hi"}])),
    ("chat-content-lone-surrogate", _chat([{"role": "user", "content": "\udcff"}])),
    ("chat-messages-empty", _chat([])),
    ("chat-messages-a-string", _chat("Hello")),
    ("chat-messages-a-dict", _chat({"role": "user", "content": "Hi"})),
    ("template-divides-by-zero", _template("{{ 1 / 0 }}")),
    ("template-recurses", _template("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")),
    ("template-nested-loops", _template(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
        "{% endfor %}{% endfor %}{% endfor %}")),
    ("template-huge-output", _template("{% for a in range(100000) %}{{ 'x' * 100000 }}{% endfor %}")),
    ("template-huge-integer", _template("{{ 10 ** 1000000 }}")),
    ("template-range-too-big", _template("{% for i in range(10000000) %}{% endfor %}")),
    ("template-strftime-bad-argument", _template("{{ strftime_now(5) }}")),
    ("template-type-error", _template("{{ messages + 1 }}")),
    ("template-unknown-filter-at-runtime", _template("{{ messages[0]['content'] | int / 0 }}")),
]


# -- the pipeline -----------------------------------------------------------------------------------
def _pipe(**kwargs):
    return lambda ctx: ctx.pipeline(HELLO, **kwargs)


def _max_length_below_prompt(ctx):
    ctx.pipeline(HELLO, max_length=2)  # transformers 4.57 raises here (a ValueError); so does edgelm


PIPELINE_CASES = [
    ("pipeline-sample-with-temperature-zero", _pipe(do_sample=True, temperature=0, max_new_tokens=2)),
    ("pipeline-max-length-below-prompt", _max_length_below_prompt),
    ("pipeline-max-length-negative", _pipe(max_length=-5)),
    ("pipeline-max-length-string", _pipe(max_length="30")),
    ("pipeline-num-return-sequences-string", _pipe(num_return_sequences="2", do_sample=True)),
    ("pipeline-num-return-sequences-float", _pipe(num_return_sequences=1.5, do_sample=True)),
    ("pipeline-return-full-text-string", _pipe(return_full_text="no", max_new_tokens=2)),
    ("pipeline-do-sample-string", _pipe(do_sample="yes", max_new_tokens=2)),
    ("pipeline-stop-strings-int", _pipe(stop_strings=5, max_new_tokens=2)),
    ("pipeline-seed-negative", _pipe(do_sample=True, seed=-1, max_new_tokens=2)),
    ("pipeline-temperature-nan", _pipe(do_sample=True, temperature=float("nan"), max_new_tokens=2)),
    ("pipeline-unknown-argument", _pipe(stop_sequence=".", max_new_tokens=2)),  # once a bare TypeError
    ("pipeline-prompt-lone-surrogate", lambda ctx: ctx.pipeline("\ud800", max_new_tokens=2)),
    ("pipeline-prompt-empty", lambda ctx: ctx.pipeline("", max_new_tokens=2)),
    ("pipeline-prompt-list-with-none", lambda ctx: ctx.pipeline(["Hi", None], max_new_tokens=2)),
    ("pipeline-model-int", lambda ctx: edgelm.pipeline("text-generation", model=5)),
    ("pipeline-regular-file-not-gguf", lambda ctx: ctx.resolve_file()),
    # a folder's precision is its own: once ignored without a word
    ("pipeline-precision-unknown", lambda ctx: edgelm.pipeline("text-generation", model=ctx.folder, precision="int3")),
    ("pipeline-precision-not-the-folders", lambda ctx: edgelm.pipeline("text-generation", model=ctx.folder,
                                                                         precision="int8")),
]


# -- the command line ---------------------------------------------------------------------------------
def _cli(*args, folder="model"):
    return lambda ctx: ctx.cli(*[str(ctx.folder) if a == "MODEL" else a for a in args])


def _cli_nan(ctx):
    folder = ctx.copy()
    data = folder / "model.onnx.data"
    data.write_bytes(np.full(data.stat().st_size // 4, np.nan, dtype=np.float32).tobytes())
    return ctx.cli("generate", str(folder), HELLO, "-n", "3")


CLI_CASES = [
    ("cli-max-new-tokens-negative", _cli("generate", "MODEL", HELLO, "-n", "-1")),
    ("cli-temperature-nan", _cli("generate", "MODEL", HELLO, "--temperature", "nan")),
    ("cli-temperature-inf", _cli("generate", "MODEL", HELLO, "--temperature", "inf")),
    ("cli-seed-negative", _cli("generate", "MODEL", HELLO, "--temperature", "1", "--seed", "-1")),
    ("cli-top-k-negative", _cli("generate", "MODEL", HELLO, "--top-k", "-5")),
    ("cli-threads-negative", _cli("generate", "MODEL", HELLO, "--threads", "-1")),
    ("cli-threads-beyond-cores", _cli("generate", "MODEL", HELLO, "--threads", "1000")),
    ("cli-json-schema-missing-file", _cli("generate", "MODEL", HELLO, "--json-schema", "/no/such/schema.json")),
    ("cli-prompt-surrogate-escaped", _cli("generate", "MODEL", "Hi \udcff", "-n", "2")),
    ("cli-prompt-empty", _cli("generate", "MODEL", "", "-n", "2")),
    ("cli-nan-weights", _cli_nan),
    ("cli-model-regular-file", lambda ctx: ctx.cli("generate", str(ctx.regular_file()), HELLO)),
    ("cli-broken-pipe", lambda ctx: ctx.cli_pipe_closed("generate", str(ctx.folder), HELLO, "-n", "40")),
    ("cli-chat-bad-template", lambda ctx: ctx.cli("chat", str(ctx.copy(template="{{ 1 / 0 }}")), "Hi", "-n", "2")),
]

CASES = MANIFEST_CASES + FILE_CASES + SETTING_CASES + CHAT_CASES + PIPELINE_CASES + CLI_CASES
EXPECTED = {case_id: "error" for case_id, _ in CASES}
EXPECTED.update({"temperature-subnormal": "ok", "eos-token-ids-int": "ok", "cli-broken-pipe": "ok"})
