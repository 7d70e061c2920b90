"""The chat template a saved run carries (``adapter/``, a merged folder): the prompt the run trained on."""

from __future__ import annotations

from typing import Any


def deploy_chat_template(data_cfg: Any, tokenizer: Any) -> str | None:
    """The chat template a server (vLLM, TGI, ``apply_chat_template``) should use: the run's training prompt
    (saved with the adapter and the merged model).

    A chat run's is the one it trained with (``data.chat_template=chatml`` included, which the base
    tokenizer does not carry); an Alpaca-format run's renders a user message as the run's Alpaca prompt
    (bos, ``### Instruction:`` ... ``### Response:``) and an assistant message as the answer + eos, as trained.
    Other formats keep the base's template."""
    import json as _json

    from ftsweep.data.encode import prepends_bos
    from ftsweep.data.options import data_options
    from ftsweep.data.templates import alpaca_template, resolve_chat_template
    from ftsweep.errors import ConfigError

    try:
        d = data_options(data_cfg)
    except ConfigError:  # the dataset_info.json entry is gone since: the format is not known any more
        return getattr(tokenizer, "chat_template", None)
    if d.format in ("chat", "sharegpt"):
        return resolve_chat_template(d, tokenizer)
    if d.format != "alpaca":
        return getattr(tokenizer, "chat_template", None)
    prefix, _, suffix = alpaca_template(d)["prompt_no_input"].partition("{instruction}")

    def lit(text: str) -> str:
        return _json.dumps(text, ensure_ascii=False)

    start = "{{ bos_token }}" if prepends_bos(tokenizer) else ""  # as trained: a tokenizer without one (Qwen) has none
    return (
        start + "{% for message in messages %}"
        "{% if message['role'] == 'user' %}{{ " + lit(prefix) + " + message['content'] + " + lit(suffix) + " }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
    )
