"""Prompt templates (templates/*.yaml) and tokenizer chat templates rendered without transformers."""

from __future__ import annotations

import json

import pytest

from engine.data.chat_template import (
    ChatTemplateError,
    chat_template_hash,
    check_chat_template,
    load_chat_template,
    render_chat,
)
from engine.data.templates import (
    PromptTemplate,
    TemplateRenderError,
    check_template,
    list_templates,
    load_template,
    render,
)
from engine.paths import shipped_dir
from engine.recipe.errors import EngineError, RecipeErrors

REQUIRED = {
    "qa/closed_book", "qa/with_context",
    "judgment/can_you_answer", "judgment/can_you_answer_uncertainty",
    "judgment/can_you_answer_with_context", "judgment/can_you_answer_with_context_uncertainty",
    "math/cot", "math/boxed", "code/complete", "tutoring/socratic", "alpaca/instruction", "router/difficulty",
}

SAMPLE = {
    "id": "q1", "domain": "qa", "source": "triviaqa",
    "question": "Which city is the capital of France?",
    "context": "Paris is the capital of France.\n\nLyon is a city in France.",
    "answers": ["Paris", "City of Paris"],
    "solution": "Paris is the capital.\n#### Paris",
    "tests": ["assert f(1) == 1"], "entry_point": "f",
    "prompt": "def f(x):\n    \"\"\"Return x.\"\"\"\n",
    "response": "What do you already know about France?",
    "label": 1, "ability": "can", "judgment_label": "yes",
    "instruction": "How hard is this question: what is 2 + 2?",
}


# ------------------------------------------------------------------------------------------ shipped templates


def test_required_templates_are_shipped():
    assert REQUIRED <= set(list_templates())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_shipped_template_loads_and_renders(name):
    template = load_template(name)
    assert template.name == name
    assert template.description
    assert template.fields, "every shipped template lists the fields it needs"
    assert template.target is not None
    assert check_template(template) == []
    row = {f: SAMPLE[f] for f in (*template.fields, *template.target_fields)}
    assert check_template(template, row) == []
    rendered = render(template, row)
    assert rendered.messages[-1]["role"] == "user"
    for message in rendered.messages:
        assert message["content"].strip() and "{{" not in message["content"] and "{%" not in message["content"]
        assert not message["content"].endswith("\n")
    assert rendered.target and "{{" not in rendered.target
    for name_ in template.fields:
        value = SAMPLE[name_]
        assert value.strip() in "\n".join(m["content"] for m in rendered.messages)


def test_every_shipped_template_is_documented():
    docs = (shipped_dir("templates").parent / "docs" / "templates.md").read_text()
    for name in list_templates():
        assert f"`{name}`" in docs, f"docs/templates.md does not describe {name}"


def test_prompts_say_what_the_scorers_expect():
    def user(name, row):
        return render(load_template(name), row, with_target=False).messages[-1]["content"]
    assert "yes or no" in user("judgment/can_you_answer", SAMPLE)
    assert "uncertain" in user("judgment/can_you_answer_uncertainty", SAMPLE)
    assert "uncertain" in user("judgment/can_you_answer_with_context_uncertainty", SAMPLE)
    assert "unanswerable" in user("qa/with_context", SAMPLE)
    assert "####" in user("math/cot", SAMPLE)
    assert "\\boxed{}" in user("math/boxed", SAMPLE)
    assert "```python" in user("code/complete", SAMPLE)
    system = render(load_template("tutoring/socratic"), SAMPLE).messages[0]
    assert system["role"] == "system" and "Never state the final answer" in system["content"]


def test_targets():
    assert render(load_template("qa/closed_book"), SAMPLE).target == "Paris"
    assert render(load_template("judgment/can_you_answer"), SAMPLE).target == "yes"
    code = render(load_template("code/complete"), {**SAMPLE, "solution": "def f(x):\n    return x\n"})
    assert code.target == "```python\ndef f(x):\n    return x\n```"


def test_alpaca_input_is_optional():
    template = load_template("alpaca/instruction")
    without = render(template, {"instruction": "Name a color.", "response": "Blue."})
    with_input = render(template, {"instruction": "Translate.", "input": "bonjour", "response": "hello"})
    empty_input = render(template, {"instruction": "Name a color.", "input": "", "response": "Blue."})
    assert "### Input:" not in without.messages[0]["content"]
    assert "### Input:\nbonjour" in with_input.messages[0]["content"]
    assert empty_input.messages == without.messages
    assert without.messages[0]["content"].endswith("### Response:")
    assert without.target == "Blue."


# ------------------------------------------------------------------------------------------ errors


def test_missing_field_names_template_field_and_row_fields():
    template = load_template("qa/closed_book")
    with pytest.raises(TemplateRenderError) as info:
        render(template, {"id": "q1", "answers": ["Paris"], "qestion": "?"})
    message = str(info.value)
    assert "qa/closed_book" in message and "'question'" in message
    assert "row fields: answers, id, qestion" in message
    assert "did you mean 'qestion'" in message
    assert isinstance(info.value, EngineError)


def test_generation_does_not_need_the_target_fields():
    template = load_template("qa/closed_book")
    rendered = render(template, {"question": "Who?"}, with_target=False)
    assert rendered.target is None and "Who?" in rendered.messages[0]["content"]
    with pytest.raises(TemplateRenderError, match="target: the row has no field 'answers'"):
        render(template, {"question": "Who?"})
    assert check_template(template, {"question": "Who?"}, with_target=False) == []
    problems = check_template(template, {"question": "Who?"})
    assert problems and "'answers'" in problems[0] and "row fields: question" in problems[0]


def test_render_errors_on_bad_values_are_reported():
    template = load_template("qa/closed_book")
    with pytest.raises(TemplateRenderError, match="qa/closed_book.*target"):
        render(template, {"question": "Who?", "answers": []})
    assert check_template(template, {"question": "Who?", "answers": []})


def test_syntax_errors_are_reported():
    template = load_template({"fields": ["question"], "messages": [{"role": "user", "content": "Q: {{ question "}]})
    problems = check_template(template)
    assert len(problems) == 1 and "syntax error" in problems[0] and "messages[0]" in problems[0]
    with pytest.raises(TemplateRenderError, match="syntax error"):
        render(template, {"question": "x"})


def test_names_not_listed_in_fields_are_reported():
    template = load_template({"fields": ["question"], "messages": [{"role": "user", "content": "{{ questoin }}"}]})
    problems = check_template(template)
    assert problems and "'questoin'" in problems[0] and "did you mean 'question'" in problems[0]


def test_inline_template_with_lists_and_filters():
    template = load_template({
        "description": "aliases",
        "fields": ["question", "answers"],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "{{ question }}\nKnown: {{ answers | join(', ') }}\n{{ answers | tojson }}"},
        ],
        "target": "{{ answers | first }}",
    })
    assert isinstance(template, PromptTemplate) and template.source == "inline"
    rendered = render(template, {"question": "Où?", "answers": ["Paris", "Île"]})
    assert rendered.messages[0] == {"role": "system", "content": "Be brief."}
    assert rendered.messages[1]["content"] == 'Où?\nKnown: Paris, Île\n["Paris", "Île"]'
    assert rendered.target == "Paris"


def test_extra_variables_are_visible():
    template = load_template({"fields": ["question"], "optional": ["n"],
                              "messages": [{"role": "user", "content": "{{ question }} x{{ n }}"}]})
    assert render(template, {"question": "Q"}, n=5).messages[0]["content"] == "Q x5"


def test_invalid_inline_templates_report_every_problem():
    with pytest.raises(RecipeErrors) as info:
        load_template({"mesages": [], "fields": "question", "target": 3})
    text = str(info.value)
    assert "unknown template key 'mesages'" in text and "did you mean 'messages'" in text
    assert "needs `messages:`" in text and "target must be a string" in text
    with pytest.raises(RecipeErrors) as info:
        load_template({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y", "x": 1}]})
    text = str(info.value)
    assert "role must be one of" in text and "unknown message key 'x'" in text and "last message must have role 'user'" in text


def test_unknown_name_suggests_a_shipped_one():
    with pytest.raises(RecipeErrors) as info:
        load_template("qa/closed_bok")
    assert "unknown template 'qa/closed_bok'" in str(info.value)
    assert "did you mean 'qa/closed_book'" in str(info.value)


def test_template_from_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("description: mine\nfields: [question]\nmessages:\n  - role: user\n    content: 'Q: {{ question }}'\n")
    template = load_template(str(path))
    assert template.source == str(path.resolve())
    assert render(template, {"question": "why"}).messages == [{"role": "user", "content": "Q: why"}]
    assert template.target is None and template.target_fields == ()
    with pytest.raises(RecipeErrors, match="not found"):
        load_template(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("messages: [\n")
    with pytest.raises(RecipeErrors, match="not valid YAML"):
        load_template(bad)


def test_digest_changes_with_content():
    a = load_template({"messages": [{"role": "user", "content": "a"}]})
    b = load_template({"messages": [{"role": "user", "content": "b"}]})
    assert a.digest() == load_template({"messages": [{"role": "user", "content": "a"}]}).digest()
    assert a.digest() != b.digest()


# ------------------------------------------------------------------------------------------ chat templates

# ChatML as in Qwen2.5, with Qwen3's `enable_thinking` switch.
QWEN_TEMPLATE = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first %}{% continue %}{% endif %}
    {%- if message.role not in ['user', 'assistant'] %}
        {{- raise_exception('Unknown role: ' + message.role) }}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

CHAT = [{"role": "user", "content": "Can you answer this question correctly?"}]
DEFAULT_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"


def test_chatml_renders_with_and_without_generation_prompt():
    without = render_chat(QWEN_TEMPLATE, CHAT, add_generation_prompt=False)
    assert without == DEFAULT_SYSTEM + "<|im_start|>user\nCan you answer this question correctly?<|im_end|>\n"
    with_prompt = render_chat(QWEN_TEMPLATE, CHAT, add_generation_prompt=True)
    assert with_prompt == without + "<|im_start|>assistant\n"
    system = render_chat(QWEN_TEMPLATE, [{"role": "system", "content": "Be brief."}, *CHAT], add_generation_prompt=False)
    assert system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert system.count("<|im_start|>system") == 1


def test_chat_template_kwargs_pass_through():
    thinking_off = render_chat(QWEN_TEMPLATE, CHAT, add_generation_prompt=True, enable_thinking=False)
    assert thinking_off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    thinking_on = render_chat(QWEN_TEMPLATE, CHAT, add_generation_prompt=True, enable_thinking=True)
    assert thinking_on.endswith("<|im_start|>assistant\n")


def test_chat_template_from_a_prompt_template():
    rendered = render(load_template("tutoring/socratic"), SAMPLE)
    text = render_chat(QWEN_TEMPLATE, [*rendered.messages, {"role": "assistant", "content": rendered.target}],
                       add_generation_prompt=False)
    assert text.startswith("<|im_start|>system\nYou are a patient") and text.endswith(SAMPLE["response"] + "<|im_end|>\n")


def test_chat_template_globals_filters_and_special_tokens():
    template = ("{{ bos_token }}{% for m in messages %}{{ m | tojson }}{% endfor %}"
                "{% generation %}{{ eos_token }}{% endgeneration %}{{ strftime_now('%Y') | length }}")
    text = render_chat(template, [{"role": "user", "content": "héllo <b>"}], add_generation_prompt=False,
                       bos_token="<s>", eos_token="</s>")
    assert text == '<s>{"role": "user", "content": "héllo <b>"}</s>4'


def test_chat_template_errors():
    with pytest.raises(ChatTemplateError, match="Unknown role: tool"):
        render_chat(QWEN_TEMPLATE, [{"role": "tool", "content": "x"}], add_generation_prompt=False)
    with pytest.raises(ChatTemplateError, match="syntax error"):
        render_chat("{% if %}", CHAT, add_generation_prompt=False)
    assert "syntax error" in check_chat_template("{% for m in messages %}")
    assert check_chat_template(QWEN_TEMPLATE) is None
    with pytest.raises(ChatTemplateError):
        render_chat("{{ messages.__class__.__mro__ }}", CHAT, add_generation_prompt=False)
    with pytest.raises(ChatTemplateError):
        render_chat("{{ messages.append(1) }}", CHAT, add_generation_prompt=False)


def test_load_chat_template_from_jinja_file(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "old", "eos_token": "</s>"}))
    (tmp_path / "chat_template.jinja").write_text(QWEN_TEMPLATE)
    assert load_chat_template(tmp_path) == QWEN_TEMPLATE


def test_load_chat_template_from_tokenizer_config(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": QWEN_TEMPLATE}))
    assert load_chat_template(tmp_path) == QWEN_TEMPLATE
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "tools"}, {"name": "default", "template": QWEN_TEMPLATE}]}))
    assert load_chat_template(str(tmp_path)) == QWEN_TEMPLATE


def test_load_chat_template_absent(tmp_path):
    assert load_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    assert load_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ChatTemplateError, match="not valid JSON"):
        load_chat_template(tmp_path)


def test_chat_template_hash():
    assert chat_template_hash(None) == "none"
    assert chat_template_hash(QWEN_TEMPLATE) == chat_template_hash(str(QWEN_TEMPLATE))
    assert len(chat_template_hash("x")) == 64 and chat_template_hash("x") != chat_template_hash("y")
