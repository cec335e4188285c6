import pytest

from edgelm.chat_template import ChatTemplate
from edgelm.errors import EdgelmError

SMOL_LIKE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_renders_like_apply_chat_template():
    out = ChatTemplate(SMOL_LIKE).render([{"role": "user", "content": "Hi"}])
    assert out == "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_special_tokens_and_raise_exception_are_available():
    template = ChatTemplate(
        "{{ bos_token }}{% if messages[0]['role'] == 'bot' %}{{ raise_exception('roles must alternate') }}{% endif %}",
        bos_token="<s>",
    )
    assert template.render([{"role": "user", "content": "x"}]) == "<s>"
    with pytest.raises(EdgelmError, match="roles must alternate"):
        template.render([{"role": "bot", "content": "x"}])


def test_bad_message_shape_is_explained():
    with pytest.raises(EdgelmError, match="'role' and 'content'"):
        ChatTemplate(SMOL_LIKE).render([{"text": "hi"}])


def test_a_template_that_renders_nothing_is_named_not_the_prompt(exported, tmp_path):
    import shutil

    import edgelm

    folder = tmp_path / "model"
    shutil.copytree(exported("llama", "fp32"), folder)
    (folder / "chat_template.jinja").write_text("{# nothing #}")
    with pytest.raises(EdgelmError, match="the chat template of .* turned these messages into no text"):
        edgelm.load(folder).chat([{"role": "user", "content": "Hi"}], max_new_tokens=1)
