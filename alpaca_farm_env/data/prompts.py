"""The AlpacaFarm prompt template.

Verbatim from tatsu-lab/alpaca_farm ``examples/prompts/v0_inputs_noinputs.json`` (also Stanford Alpaca's
``PROMPT_DICT``): the prompt ends exactly at ``### Response:`` with no trailing space or newline.
"""
from __future__ import annotations

PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)


def format_prompt(instruction: str, input: str = "") -> str:  # noqa: A002 - the field is called input upstream
    """Format one example with the AlpacaFarm template (the with-input variant when ``input`` is non-empty)."""
    if input:
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_NO_INPUT.format(instruction=instruction)
