"""The alpaca_eval prompt and completion format of the OpenAI-compatible annotators (tatsu-lab/alpaca_eval
``src/alpaca_eval``): the dummy examples that pad a batch, templates filled example by example, ChatML prompts as chat
messages, and the regex parser of completions."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping, Sequence

from .configs import PLACEHOLDER_RE

# tatsu-lab/alpaca_farm src/alpaca_farm/auto_annotations/pairwise_annotators.py
DUMMY_EXAMPLE_NOINPUT = dict(instruction="Solve: 1+1=", input="", output_1="2", output_2="3")
DUMMY_EXAMPLE_INPUT = dict(instruction="Solve:", input="1+1=", output_1="2", output_2="3")


def fill_template(template: str, examples: Sequence[Mapping[str, Any]]) -> str:
    """Fill the k-th occurrence of each ``{field}`` with ``examples[k][field]`` (alpaca_eval ``make_prompts``)."""
    seen: Counter = Counter()

    def repl(m: re.Match) -> str:
        key = m.group(1)
        i = seen[key]
        seen[key] += 1
        return str(examples[i][key])

    return PLACEHOLDER_RE.sub(repl, template)


def prompt_to_chatml(prompt: str, start: str = "<|im_start|>", end: str = "<|im_end|>") -> list[dict[str, str]]:
    """ChatML text -> chat messages (alpaca_eval ``utils.prompt_to_chatml``; ``system name=x`` keeps the name)."""
    prompt = prompt.strip()
    if not (prompt.startswith(start) and prompt.endswith(end)):
        raise ValueError("not a ChatML prompt")
    messages = []
    for part in prompt.split(start)[1:]:
        head, _, body = part.partition("\n")
        role = head.strip()
        msg: dict[str, str] = {"content": body.split(end, 1)[0].strip()}
        if role.startswith("system") and role != "system":
            msg["role"] = "system"
            for kv in role[len("system"):].split(","):
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    msg[k.strip()] = v.strip()
        else:
            msg["role"] = role
        messages.append(msg)
    return messages


def regex_parse(completion: str, outputs_to_match: Mapping[float, str | re.Pattern]) -> list[float]:
    """alpaca_eval ``regex_parser``: keys in the order their patterns match, each match consumed."""
    pats = {k: (v if isinstance(v, re.Pattern) else re.compile(v)) for k, v in outputs_to_match.items()}
    out, text = [], completion
    while True:
        best = None
        for k, p in pats.items():
            m = p.search(text)
            if m and (best is None or m.start() < best[1].start()):
                best = (k, m)
        if best is None:
            return out
        out.append(best[0])
        text = text[best[1].end():]

