"""A tenant's moderation policy: which checks run, and what each one does where.

Stored per tenant as JSON (memory/moderation_store.py); a tenant that never
set one gets :data:`DEFAULT_POLICY`. docs/moderation.md explains every field.

Actions, for text going *in* (the person's message) or *out* (the reply):

- ``allow``: the check does not run at all (costs nothing);
- ``flag``: the text passes unchanged and a flag lands in the review queue;
- ``mask``: the offending spans are replaced (``[email]``, ``****``) and the
  masked text is what the model, the store and the client see;
- ``block``: input is refused (``error`` ``moderation_blocked``, nothing
  stored); a reply is ended with that error and not stored. Blocks are
  flagged too, so operators see them.

Retrieved memories have their own actions (``injection.memory``): ``allow``,
``neutralize`` (quoted as data, role markers stripped) or ``drop``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Action = Literal["allow", "flag", "mask", "block"]
MemoryAction = Literal["allow", "neutralize", "drop"]
CATEGORIES = ("pii", "profanity", "toxicity", "injection")
PiiKind = Literal["email", "phone", "card"]
PII_KINDS: tuple[PiiKind, ...] = ("email", "phone", "card")

__all__ = [
    "CATEGORIES",
    "DEFAULT_POLICY",
    "PII_KINDS",
    "Policy",
    "PolicyError",
    "Rule",
    "parse_policy",
]


class PolicyError(ValueError):
    """A policy document that does not validate; the message names the fields."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Action = "allow"
    output: Action = "allow"


class ToxicityRule(Rule):
    # A classifier judges the whole text: there is no span to mask.
    input: Literal["allow", "flag", "block"] = "allow"
    output: Literal["allow", "flag", "block"] = "allow"


class InjectionRule(Rule):
    # Prompt injection is about what reaches the model: the person's input and
    # recalled memories. A reply is not checked for it (``output`` is ignored).
    memory: MemoryAction = "drop"


class ImagesRule(BaseModel):
    """Generated images (agents/media_jobs.py): what one judged NSFW gets.

    ``block``: withheld (the request ends with ``error`` ``media_refused``);
    ``flag``: delivered and marked ``nsfw_flagged`` on the item; ``allow``: not
    checked at all.
    """

    model_config = ConfigDict(extra="forbid")

    nsfw: Literal["allow", "flag", "block"] = "block"


class Policy(BaseModel):
    """Validated policy; ``model_dump()`` is the stored and served JSON."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    pii: Rule = Field(default_factory=lambda: Rule(input="mask", output="mask"))
    pii_kinds: list[PiiKind] = Field(default_factory=lambda: list(PII_KINDS))
    profanity: Rule = Field(default_factory=Rule)
    # Runs only when a moderation endpoint or model is configured.
    toxicity: ToxicityRule = Field(
        default_factory=lambda: ToxicityRule(input="block", output="block")
    )
    injection: InjectionRule = Field(default_factory=lambda: InjectionRule(input="flag"))
    images: ImagesRule = Field(default_factory=ImagesRule)
    # When the toxicity endpoint fails or times out: "open" lets the text
    # through (and logs it), "closed" blocks it with ``moderation_unavailable``.
    toxicity_failure: Literal["open", "closed"] = "open"
    # Category scores at or above this count as toxic even when the endpoint
    # does not say ``flagged`` (None: trust ``flagged`` alone).
    toxicity_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    def action(self, category: str, direction: str) -> str:
        if not self.enabled:
            return "allow"
        rule: Rule = getattr(self, category)
        if category == "injection" and direction == "output":
            return "allow"
        return str(getattr(rule, direction))

    def output_active(self, toxicity_available: bool) -> bool:
        """Does a reply need the streaming filter (or an end-of-reply check) at all?"""
        if not self.enabled:
            return False
        if self.pii.output != "allow" or self.profanity.output != "allow":
            return True
        return toxicity_available and self.toxicity.output != "allow"


DEFAULT_POLICY = Policy()


def parse_policy(data: Any) -> Policy:
    """A stored or submitted policy; missing fields take the defaults."""
    try:
        return Policy.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PolicyError(problems) from exc
