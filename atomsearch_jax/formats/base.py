"""The agent-format interface, its record types, and the text helpers every format shares.

An *agent format* is a prompt template plus a tag grammar: what the model writes (thinking, tool calls,
answers), what the host inserts after a tool call, and how both are parsed back. Strings throughout are
plain Python `str`; "response" always means everything generated after the prompt text (the generation
prefix excluded), with the environment's insertions included.

Security property (DESIGN.md "Must hold" 8): whatever a retrieved document contains, the text returned by
`render_results` / `render_failure` contains no structural tag and no chat special token coming from the
document: `neutralize` rewrites every `<` that could open a tag (`<x`, `</x`, `<|`, `<!`, `<?`) to `&lt;`.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import re
from typing import Any, NamedTuple, Sequence


@dataclasses.dataclass(frozen=True)
class AtomicThought:
    """One atomic thought: sub-tag name as written (e.g. "PLAN"), its stripped text, 0-based turn index
    (the index of the `<think>` block it sits in)."""

    tag: str
    text: str
    turn: int


SEARCH_TOOL = "search"
CODE_TOOL = "code_interpreter"


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """A parsed tool call: the search queries (non-empty, stripped; empty for other tools), the raw call
    text, which tool the host runs (`SEARCH_TOOL` or `CODE_TOOL`) and its arguments (`{"code": str}` for
    the code interpreter)."""

    queries: list[str]
    raw: str
    tool: str = SEARCH_TOOL
    arguments: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FormatReport:
    """Result of validating a response: `ok` iff `errors` is empty; errors are short readable reasons."""

    ok: bool
    errors: list[str]

    @classmethod
    def from_errors(cls, errors: Sequence[str]) -> "FormatReport":
        return cls(ok=not errors, errors=list(errors))


# A `<` followed by a character that can start a tag name, a closing slash, a chat special token (`<|`),
# a comment/doctype (`<!`) or a processing instruction (`<?`); or a `<` ending the text (it could join
# with whatever is concatenated after it).
_TAG_OPENER = re.compile(r"<(?=[A-Za-z_/|!?])|<\Z")


def neutralize(text: str) -> str:
    """Escape tag-like text so it cannot open or close any tag nor form a chat special token.

    Only `<` characters that could begin a tag are rewritten (to `&lt;`); comparisons such as `a < b`
    are left alone. The result never contains `<tag`, `</tag`, `<|` (so never `<|im_end|>` etc.).
    """
    return _TAG_OPENER.sub("&lt;", text)


def truncate_chars(text: str, max_chars: int | None) -> str:
    """Cut `text` to at most `max_chars` characters (None = no limit), marking the cut with "...".

    The marker counts towards the budget so the result length is <= max_chars.
    """
    if max_chars is None or len(text) <= max_chars:
        return text
    if max_chars < 0:
        raise ValueError(f"max_chars_per_doc must be >= 0 or None, got {max_chars}")
    marker = "..."
    if max_chars <= len(marker):
        return text[:max_chars]
    return text[: max_chars - len(marker)].rstrip() + marker


def doc_contents(doc: dict[str, Any]) -> str:
    """The `contents` string of a document; ValueError naming the document when there is none."""
    contents = doc.get("contents") if isinstance(doc, dict) else None
    if not isinstance(contents, str):
        raise ValueError(f"document {doc!r:.120} has no string 'contents' field")
    return contents


def split_title_text(doc: dict[str, Any]) -> tuple[str, str]:
    """(title, text) of a document `{"id", "contents"}` whose contents is `"Title"\\nText`.

    Title = first line with surrounding double quotes stripped; text = the remaining lines.
    Raises ValueError naming the document when it has no string `contents`.
    """
    first, _, rest = doc_contents(doc).partition("\n")
    title = first.strip()
    if len(title) >= 2 and title.startswith('"') and title.endswith('"'):
        title = title[1:-1]
    return title, rest.strip()


def last_block(text: str, open_tag: str, close_tag: str) -> str | None:
    """Content between the last `open_tag` and the first `close_tag` after it, or None."""
    start = text.rfind(open_tag)
    if start < 0:
        return None
    end = text.find(close_tag, start + len(open_tag))
    if end < 0:
        return None
    return text[start + len(open_tag) : end]


def find_blocks(text: str, open_tag: str, close_tag: str) -> list[str]:
    """Contents of every non-overlapping `open_tag ... close_tag` block, in order (non-greedy)."""
    pattern = re.compile(re.escape(open_tag) + r"(.*?)" + re.escape(close_tag), re.DOTALL)
    return [m.group(1) for m in pattern.finditer(text)]


class AgentFormat(abc.ABC):
    """One agent format (prompt, stop strings, tool calls, results, validation). Subclasses set the class
    attributes and implement the abstract methods; instances are cheap, stateless and thread-safe."""

    name: str = ""
    generation_prefix: str = ""
    stop_strings: tuple[str, ...] = ()
    prompts: dict[str, str] = {}  # system prompt text per version name; a text never changes under its name
    default_prompt_version: str = ""
    tools: tuple[str, ...] = (SEARCH_TOOL,)  # the tools the prompt offers (SEARCH_TOOL, CODE_TOOL)
    answer_kind: str = "text"  # "text": short answers compared as SQuAD strings; "math": boxed math answers

    def __init__(self, prompt_version: str | None = None):
        version = prompt_version or self.default_prompt_version
        if version not in self.prompts:
            raise ValueError(f"unknown {self.name} prompt version {version!r}; known: {sorted(self.prompts)}")
        self.prompt_version = version

    # -- prompt -------------------------------------------------------------------------------------
    def system_prompt(self) -> str:
        """The versioned system prompt (`self.prompt_version`)."""
        return self.prompts[self.prompt_version]

    def user_content(self, question: str) -> str:
        """The user turn for `question` (formats may add a prefix such as "Question: ")."""
        return question.strip()

    def messages(self, question: str) -> list[dict[str, str]]:
        """Chat messages for `question`: system prompt then the user turn."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question must be a non-empty string, got {question!r:.80}")
        return [
            {"role": "system", "content": self.system_prompt()},
            {"role": "user", "content": self.user_content(question)},
        ]

    def prompt_text(self, question: str, tokenizer: Any) -> str:
        """The exact prompt string: the tokenizer's chat template with a generation prompt, then the
        format's generation prefix."""
        text = tokenizer.apply_chat_template(self.messages(question), tokenize=False, add_generation_prompt=True)
        if not isinstance(text, str):
            raise TypeError(f"tokenizer.apply_chat_template(tokenize=False) returned {type(text).__name__}, not str")
        return text + self.generation_prefix

    # -- tool calls and environment insertions --------------------------------------------------------
    def parse_tool_call(self, segment_text: str) -> ToolCall | None:
        """The tool call that ends `segment_text` (model text since the last environment insertion,
        stop string included), or None. `parse_tool_call_with_reason` says why when None."""
        return self.parse_tool_call_with_reason(segment_text)[0]

    @abc.abstractmethod
    def parse_tool_call_with_reason(self, segment_text: str) -> tuple[ToolCall | None, str | None]:
        """(call, None) for a well-formed call ending the segment; (None, reason) otherwise.
        reason is None when the segment simply does not end with a tool call (e.g. it ends with an
        answer or EOS); it is a short message when a call was attempted but is malformed."""

    @abc.abstractmethod
    def render_results(self, results: Sequence[Sequence[dict]], *, max_chars_per_doc: int | None = None) -> str:
        """Text inserted after a tool call: one inner list of docs per query, neutralized, wrapped."""

    @abc.abstractmethod
    def render_failure(self, error: str) -> str:
        """Text inserted when the call failed (retrieval error or malformed call), neutralized, wrapped."""

    def render_invalid_call(self, reason: str) -> str:
        """Text inserted after a malformed tool call (`reason` says what was wrong)."""
        return self.render_failure(f"invalid tool call: {reason}")

    def render_code_result(self, stdout: str, stderr: str, error: str | None) -> str:
        """Text inserted after a code-interpreter call (formats with a code tool override this)."""
        raise ValueError(f"the {self.name} format has no code interpreter tool")

    @abc.abstractmethod
    def render_turn(
        self,
        thoughts: Sequence[tuple[str, str]],
        *,
        queries: Sequence[str] | None = None,
        answer: str | None = None,
    ) -> str:
        """One model turn as the model writes it: think block, then a tool call or the answer."""

    # -- reading a finished response ------------------------------------------------------------------
    @abc.abstractmethod
    def extract_answer(self, response: str) -> str | None:
        """The final answer text, or None when the response has no (extractable) answer."""

    @abc.abstractmethod
    def validate(self, response: str) -> FormatReport:
        """Check the response against the format's grammar; every violation found is reported."""

    @abc.abstractmethod
    def atomic_thoughts(self, response: str) -> list[AtomicThought]:
        """The thoughts a reasoning reward model grades, in order."""

    def answer_closes(self, text: str) -> bool:
        """True when `text` (model output) ends with the answer's closing tag, ignoring whitespace."""
        return text.rstrip().endswith("</answer>")

    @staticmethod
    def _check_render_turn_args(queries: Sequence[str] | None, answer: str | None) -> None:
        if (queries is None) == (answer is None):
            raise ValueError("render_turn needs exactly one of queries= or answer=")
        if queries is not None and (not queries or any(not isinstance(q, str) or not q.strip() for q in queries)):
            raise ValueError(f"render_turn queries must be non-empty strings, got {list(queries)!r}")


# The Qwen chat template's tool turn, as the host inserts it after a `<tool_call>`: the assistant turn is
# closed, a user turn carries the <tool_response> block(s), and a new assistant turn opens.
TOOL_RESPONSE_TURN = re.compile(
    r"\s*<\|im_end\|>\s*<\|im_start\|>user\s*(?:<tool_response>.*?</tool_response>\s*)+<\|im_end\|>\s*"
    r"<\|im_start\|>assistant\s*",
    re.DOTALL,
)


def tool_call_body(segment_text: str) -> tuple[str | None, str, str | None]:
    """(body, raw call text, reason) of the `<tool_call>…</tool_call>` that ends `segment_text`.

    body is None when the segment does not end with `</tool_call>` (reason None: no call attempted) or
    has no opening tag (reason says so).
    """
    stripped = segment_text.rstrip()
    if not stripped.endswith("</tool_call>"):
        return None, "", None
    body_end = len(stripped) - len("</tool_call>")
    start = stripped.rfind("<tool_call>", 0, body_end)
    if start < 0:
        return None, "", "</tool_call> without a preceding <tool_call>"
    return stripped[start + len("<tool_call>") : body_end], stripped[start:], None


def tool_call_object(segment_text: str) -> tuple[dict | None, str, str | None]:
    """(call, raw call text, reason) of the JSON `<tool_call>` that ends `segment_text` (Hermes style,
    `{"name": …, "arguments": {…}}`). call is None when no call ends the segment (reason None) or its
    body is not a JSON object (reason says why)."""
    body, raw, reason = tool_call_body(segment_text)
    if body is None:
        return None, raw, reason
    try:
        call = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as err:
        return None, raw, f"tool call is not valid JSON ({err.__class__.__name__}: {str(err)[:80]})"
    if not isinstance(call, dict):
        return None, raw, "tool call JSON is not an object"
    return call, raw, None


def call_arguments(call: dict) -> tuple[Any, str | None]:
    """(arguments, reason) of a decoded tool call; arguments serialized as a JSON string (as OpenAI's
    API sends them) are decoded too. The caller checks their shape."""
    args = call.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (json.JSONDecodeError, RecursionError):
            return None, "tool call arguments string is not valid JSON"
    return args, None


class ToolTurnCheck(NamedTuple):
    """Result of `check_tool_turn`: where validation continues (None: it cannot), the errors found, and
    whether the call was closed (it then counts as a call)."""

    end: int | None
    errors: list[str]
    closed: bool


def check_tool_turn(fmt: "AgentFormat", text: str, start: int, turn: int) -> ToolTurnCheck:
    """Validates the `<tool_call>…</tool_call>` starting at text[start] and the tool turn that must follow."""
    close = text.find("</tool_call>", start)
    if close < 0:
        return ToolTurnCheck(None, [f"unclosed <tool_call> (turn {turn})"], False)
    close += len("</tool_call>")
    errors = []
    _, reason = fmt.parse_tool_call_with_reason(text[start:close])
    if reason:
        errors.append(f"malformed tool call (turn {turn}): {reason}")
    env = TOOL_RESPONSE_TURN.match(text, close)
    if env is None:
        errors.append("tool call without tool response" if not text[close:].strip()
                      else f"tool call not followed by a tool response (turn {turn})")
        return ToolTurnCheck(None, errors, True)
    return ToolTurnCheck(env.end(), errors, True)


def braced_group(text: str, start: int) -> tuple[str, int] | None:
    """(content, end) of the balanced `{…}` group opening at text[start], or None when it never closes."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def tool_response_turn(content: str, generation_prefix: str = "") -> str:
    """`content` (already neutralized) wrapped as the Qwen tool turn, ending with the generation prefix."""
    return (f"<|im_end|>\n<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n"
            f"<|im_start|>assistant\n{generation_prefix}")


# Chat tokens a decoded response may end with (EOS / end of turn); ignored by validators.
_TRAILING_SPECIALS = re.compile(r"(?:\s|<\|im_end\|>|<\|endoftext\|>)+\Z")


def strip_trailing_specials(text: str) -> str:
    """`text` without trailing whitespace and end-of-turn / end-of-text chat tokens."""
    return _TRAILING_SPECIALS.sub("", text)
