"""Reading annotator configs in the alpaca_eval format.

An alpaca_eval config file (``configs.yaml``) maps member names to entries such as::

    gpt4_3:
      prompt_template: "alpaca_farm/chatml_b5_without_inputs.txt"   # relative to evaluators_configs/
      fn_completions: "openai_completions"
      completions_kwargs: {model_name: "gpt-4-0314", max_tokens: 250, temperature: 1.0}
      completion_parser_kwargs: {outputs_to_match: {1: '(?:^|\\n) ?Output \\(a\\)', 2: '(?:^|\\n) ?Output \\(b\\)'}}
      batch_size: 5

The built-in configs (the 13-member AlpacaFarm pool in ``evaluators_configs/alpaca_farm`` and
``evaluators_configs/alpaca_farm_greedy_gpt4``) are read from the *installed* ``alpaca_eval`` package's files; the
package is located with ``importlib.util.find_spec`` and never imported (its dependencies are not required) and the
prompt files are never copied into this project.
"""
from __future__ import annotations

import importlib.util
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .. import errors
from ..utils import decode_error_text, digest

__all__ = [
    "MemberConfig", "alpaca_eval_configs_dir", "resolve_config_path", "load_member_configs", "BUILTIN_CONFIGS",
    "PLACEHOLDER_RE",
]

# alpaca_eval utils.make_prompts: placeholders are "{name}" without spaces, each repeated batch_size times
PLACEHOLDER_RE = re.compile(r"{([^ \s]+?)}")
BUILTIN_CONFIGS = ("alpaca_farm", "alpaca_farm_greedy_gpt4")
# completions_kwargs we interpret ourselves instead of forwarding to the API
_NOT_FORWARDED = {"model_name", "tokens_to_avoid", "tokens_to_favor", "is_skip_multi_tokens_to_avoid", "is_strip",
                  "num_procs", "batch_size", "price_per_token", "requires_chatml", "is_chat", "client_config_path"}


class ConfigError(errors.ConfigError):
    """A malformed or missing annotator config (a :class:`~alpaca_farm_env.errors.ConfigError`: the CLI prints one
    line and exits with 2)."""


def alpaca_eval_configs_dir() -> Path:
    """``<site-packages>/alpaca_eval/evaluators_configs`` of the installed alpaca_eval package (not imported)."""
    spec = importlib.util.find_spec("alpaca_eval")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        d = Path(loc) / "evaluators_configs"
        if d.is_dir():
            return d
    raise ConfigError(
        "the built-in AlpacaFarm annotator configs are read from the alpaca_eval package's files, which is not "
        "installed (a dependency of alpaca-farm-env): pip install alpaca-eval==0.6.6; or pass the path of an "
        "alpaca_eval-format configs.yaml"
    )


def resolve_config_path(config: str | Path) -> Path:
    """A built-in name (``alpaca_farm``), a directory holding configs.yaml, or a yaml file path."""
    p = Path(config)
    if not p.exists() and isinstance(config, str) and "/" not in config and not config.endswith((".yaml", ".yml")):
        p = alpaca_eval_configs_dir() / config
    if p.is_dir():
        p = p / "configs.yaml"
    if not p.is_file():
        raise ConfigError(f"annotator config {str(config)!r} not found (looked at {p})")
    return p


@dataclass
class MemberConfig:
    """One alpaca_eval annotator entry, with the fields alpaca_eval uses (``SingleAnnotator`` arguments)."""

    name: str
    prompt_template: str  # the template text
    model_name: str  # effective model (after overrides)
    completions_kwargs: dict[str, Any] = field(default_factory=dict)  # forwarded: max_tokens, temperature, top_p...
    outputs_to_match: dict[float, str] = field(default_factory=dict)  # preference -> regex
    batch_size: int = 1
    fn_completions: str = "openai_completions"
    original_model_name: str = ""
    prompt_template_path: str = ""
    config_path: str = ""
    is_chat: bool = True  # ChatML template -> chat.completions; plain text -> completions
    ignored_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. tokens_to_favor (model-specific logit bias)

    def config_hash(self) -> str:
        """What determines a completion: template text, model, decoding kwargs, parser, batch size, endpoint."""
        return digest({
            "prompt_template": self.prompt_template, "model_name": self.model_name,
            "completions_kwargs": self.completions_kwargs, "outputs_to_match": {str(k): v for k, v in self.outputs_to_match.items()},
            "batch_size": self.batch_size, "is_chat": self.is_chat,
        })[:32]

    def placeholders(self) -> list[str]:
        return list(Counter(PLACEHOLDER_RE.findall(self.prompt_template)))

    def validate(self) -> None:
        counts = Counter(PLACEHOLDER_RE.findall(self.prompt_template))
        if not counts:
            raise ConfigError(f"annotator {self.name!r} ({self.config_path}): template has no {{placeholders}}")
        bad = {k: v for k, v in counts.items() if v != self.batch_size}
        if bad:  # alpaca_eval utils.make_prompts raises the same
            raise ConfigError(f"annotator {self.name!r} ({self.config_path}): every placeholder must appear "
                              f"batch_size={self.batch_size} times, got {dict(counts)}")
        unknown = set(counts) - {"instruction", "output_1", "output_2", "input"}
        if unknown:
            raise ConfigError(f"annotator {self.name!r} ({self.config_path}): unknown placeholders {sorted(unknown)}")
        if not self.outputs_to_match:
            raise ConfigError(f"annotator {self.name!r} ({self.config_path}): completion_parser_kwargs.outputs_to_match is required")
        for v in self.outputs_to_match.values():
            re.compile(v)
        if self.is_chat and not self.prompt_template.strip().startswith("<|im_start|>"):
            raise ConfigError(f"annotator {self.name!r}: is_chat but the template is not ChatML")


def effective_model(member: str, original: str, model_overrides: Mapping[str, str] | None, model: str | None) -> str:
    """Per-member override beats per-original-model override beats the global ``model``."""
    mo = dict(model_overrides or {})
    if member in mo:
        return mo[member]
    if original in mo:
        return mo[original]
    return model or original


def load_member_configs(
    config: str | Path = "alpaca_farm",
    *,
    model_overrides: Mapping[str, str] | None = None,
    model: str | None = None,
    members: list[str] | None = None,
    text_templates_as_chat: bool = False,
) -> dict[str, MemberConfig]:
    """Load every entry of an alpaca_eval ``configs.yaml`` (prompt template paths are relative to its parent dir's
    parent, as in alpaca_eval ``BaseAnnotator._initialize_annotators``).

    ``model_overrides`` maps a member name (``"gpt4_3"``) or an original model name (``"gpt-4-0314"``) to the model to
    use; ``model`` overrides every other member. ``text_templates_as_chat`` sends plain-text templates (written for
    text-davinci-003) as one user message to chat.completions, for servers without the completions endpoint.
    """
    path = resolve_config_path(config)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: {decode_error_text(e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {path}: {e}") from e
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path} holds no annotator entries")
    base_dir = path.parents[1]
    out: dict[str, MemberConfig] = {}
    for name, entry in raw.items():
        if members is not None and name not in members:
            continue
        if not isinstance(entry, dict) or "prompt_template" not in entry:
            raise ConfigError(f"{path}: entry {name!r} has no prompt_template")
        fn = entry.get("fn_completions", "openai_completions")
        if fn not in ("openai_completions",):
            raise ConfigError(f"{path}: entry {name!r} uses fn_completions={fn!r}; only openai_completions (any "
                              "OpenAI-compatible server via base_url) is supported")
        parser = entry.get("fn_completion_parser", "regex_parser")
        if parser != "regex_parser":
            raise ConfigError(f"{path}: entry {name!r} uses fn_completion_parser={parser!r}; only regex_parser is supported")
        tpath = Path(entry["prompt_template"])
        tfile = tpath if tpath.is_absolute() else base_dir / tpath
        if not tfile.is_file():
            raise ConfigError(f"{path}: prompt template {tfile} of entry {name!r} not found")
        try:
            template = tfile.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: prompt template {tfile} of entry {name!r}: {decode_error_text(e)}") from None
        ck = dict(entry.get("completions_kwargs") or {})
        original = ck.get("model_name")
        if not original:
            raise ConfigError(f"{path}: entry {name!r} has no completions_kwargs.model_name")
        forwarded = {k: v for k, v in ck.items() if k not in _NOT_FORWARDED}
        ignored = {k: v for k, v in ck.items() if k in ("tokens_to_avoid", "tokens_to_favor")}
        otm = (entry.get("completion_parser_kwargs") or {}).get("outputs_to_match") or {}
        is_chatml = template.strip().startswith("<|im_start|>")
        cfg = MemberConfig(
            name=str(name), prompt_template=template,
            model_name=effective_model(str(name), original, model_overrides, model),
            completions_kwargs=forwarded, outputs_to_match={float(k): str(v) for k, v in otm.items()},
            batch_size=int(entry.get("batch_size", 1)), fn_completions=fn, original_model_name=original,
            prompt_template_path=str(tfile), config_path=str(path), is_chat=is_chatml or text_templates_as_chat,
            ignored_kwargs=ignored,
        )
        cfg.validate()
        out[cfg.name] = cfg
    if members is not None:
        missing = set(members) - set(out)
        if missing:
            raise ConfigError(f"{path}: no entries named {sorted(missing)}; available: {sorted(raw)}")
    return out
