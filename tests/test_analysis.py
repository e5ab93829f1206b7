"""Analyzers: known answers of the lexicon default, language detection, the base and
registry, and the transformers analyzer's wiring with a fake pipeline."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agents.analysis import AnalysisSettings, build_service
from agents.analysis.base import EMOTIONS, Analysis, Analyzer, AnalyzerError, Sentiment
from agents.analysis.language import detect_language
from agents.analysis.lexicon import LexiconAnalyzer, tokenize
from agents.analysis.registry import analyzer_name, create_analyzer
from agents.analysis.transformer import (
    TransformerAnalyzer,
    emotions_from_labels,
    sentiment_from_labels,
)

JOYFUL = "I am so happy and grateful today, this is a wonderful and beautiful gift! I love it."
ANGRY = "I am furious and angry, full of rage. You make me so mad!"
FEARFUL = "I am terrified and afraid. The horror and panic make me tremble with fear."
SAD = "I feel so sad and lonely since my friend died, I cried all night in grief."


@pytest.fixture(scope="module")
def lexicon() -> LexiconAnalyzer:
    analyzer = LexiconAnalyzer()
    analyzer.start()
    return analyzer


def _top(emotions: dict[str, float]) -> str:
    return max(emotions, key=lambda k: emotions[k])


# -- the lexicon analyzer: known answers ------------------------------------------------


def test_sentiment_direction(lexicon: LexiconAnalyzer) -> None:
    joyful, angry, fearful = lexicon.analyze_batch([JOYFUL, ANGRY, FEARFUL])
    assert joyful.sentiment.compound > 0.5
    assert joyful.sentiment.pos > joyful.sentiment.neg
    assert angry.sentiment.compound < -0.5
    assert angry.sentiment.neg > angry.sentiment.pos
    assert fearful.sentiment.compound < -0.3
    neutral = lexicon.analyze("The meeting is on Tuesday at nine.")
    assert abs(neutral.sentiment.compound) < 0.05 and neutral.sentiment.neu == 1.0
    # VADER's rules: negation flips, intensity raises
    assert lexicon.analyze("This is not good.").sentiment.compound < 0
    assert (
        lexicon.analyze("This is VERY GOOD!!!").sentiment.compound
        > lexicon.analyze("This is good.").sentiment.compound
    )
    for a in (joyful, angry, fearful, neutral):
        s = a.sentiment
        assert -1 <= s.compound <= 1 and abs(s.pos + s.neu + s.neg - 1) < 0.01


def test_emotion_direction(lexicon: LexiconAnalyzer) -> None:
    joyful, angry, fearful, sad = lexicon.analyze_batch([JOYFUL, ANGRY, FEARFUL, SAD])
    assert _top(joyful.emotions) == "joy"
    assert joyful.emotions["anger"] == joyful.emotions["fear"] == 0.0
    assert _top(angry.emotions) == "anger"
    assert angry.emotions["joy"] == 0.0
    assert _top(fearful.emotions) == "fear"
    assert fearful.emotions["fear"] > fearful.emotions["joy"]
    assert _top(sad.emotions) == "sadness"
    for a in (joyful, angry, fearful, sad):
        assert list(a.emotions) == list(EMOTIONS)
        assert abs(sum(a.emotions.values()) - 1.0) < 1e-6  # shares of the eight


def test_no_emotion_words_give_all_zero(lexicon: LexiconAnalyzer) -> None:
    a = lexicon.analyze("The meeting is on Tuesday at nine.")
    assert a.emotions == dict.fromkeys(EMOTIONS, 0.0)
    assert lexicon.analyze("!!! 123 :)").emotions == dict.fromkeys(EMOTIONS, 0.0)


def test_inflected_words_reach_the_lexicon(lexicon: LexiconAnalyzer) -> None:
    # "scared"/"screaming" are not in the NRC lexicon as such; their base forms are.
    assert lexicon.emotions("scared")["fear"] > 0
    assert lexicon.emotions("screaming")["fear"] > 0
    assert tokenize("Don't SHOUT, it's fine.") == ["don't", "shout", "it's", "fine"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Hello, how are you doing today? The weather is lovely.", "en"),
        ("Hola, ¿cómo estás? Me encanta este lugar, es precioso.", "es"),
        ("Bonjour, je suis très content de vous voir aujourd'hui.", "fr"),
        ("Guten Tag, ich freue mich sehr, Sie heute zu sehen.", "de"),
        ("Ciao, come stai? Oggi fa bel tempo e sono felice.", "it"),
        ("Привет, как у тебя дела? Я очень рад тебя видеть.", "ru"),  # noqa: RUF001
        ("こんにちは、今日はとても良い天気ですね。", "ja"),
    ],
)
def test_language_detection(text: str, language: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["", "ok", ":)", "42", "👍👍"])
def test_too_short_to_tell_is_none(text: str) -> None:
    assert detect_language(text) is None


def test_public_shape(lexicon: LexiconAnalyzer) -> None:
    public = lexicon.analyze(JOYFUL).to_public()
    assert set(public) == {"sentiment", "emotions", "language"}
    assert set(public["sentiment"]) == {"compound", "pos", "neu", "neg"}
    assert list(public["emotions"]) == list(EMOTIONS)
    assert public["language"] == "en"


# -- the base, with a fake subclass ------------------------------------------------------


class FakeAnalyzer(Analyzer):
    """Positive when the text says "good", with its own language."""

    name = "fake"

    def __init__(self) -> None:
        self.started = 0
        self.seen: list[str] = []

    def start(self) -> None:
        self.started += 1

    def analyze_batch(self, texts: Sequence[str]) -> list[Analysis]:
        self.seen.extend(texts)
        return [
            Analysis(
                sentiment=Sentiment(compound=0.5 if "good" in t else -0.5),
                emotions={**dict.fromkeys(EMOTIONS, 0.0), "joy": 1.0},
                language="xx",
            )
            for t in texts
        ]


async def test_the_base_runs_subclasses_sync_and_in_a_thread() -> None:
    fake = FakeAnalyzer()
    assert fake.analyze("good").sentiment.compound == 0.5
    results = await fake.analyze_async(["good", "bad"])
    assert [r.sentiment.compound for r in results] == [0.5, -0.5]
    assert fake.label == "fake" and fake.seen == ["good", "good", "bad"]
    fake.check()  # the default: nothing to check


def test_a_disabled_analysis_builds_no_service() -> None:
    # (an enabled one, with a fake analyzer: tests/test_analysis_store.py)
    settings = AnalysisSettings(enabled=False)
    assert build_service(object(), object(), settings, analyzer=FakeAnalyzer()) is None  # type: ignore[arg-type]


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALON_ANALYSIS_ENABLED", "false")
    monkeypatch.setenv("SALON_ANALYSIS_ROLES", "user")
    monkeypatch.setenv("SALON_ANALYSIS_MAX_CHARS", "100")
    settings = AnalysisSettings()
    assert settings.enabled is False
    assert settings.role_set == {"user"}
    assert settings.max_chars == 100


# -- registry ----------------------------------------------------------------------------


def test_registry_defaults_to_the_lexicons() -> None:
    assert analyzer_name(AnalysisSettings()) == "lexicon"
    assert isinstance(create_analyzer(AnalysisSettings()), LexiconAnalyzer)
    assert isinstance(create_analyzer(AnalysisSettings(analyzer="lexicon")), LexiconAnalyzer)


def test_registry_picks_transformers_when_a_model_is_configured(tmp_path: Path) -> None:
    settings = AnalysisSettings(sentiment_model=str(tmp_path))
    assert analyzer_name(settings) == "transformers"
    analyzer = create_analyzer(settings)
    assert isinstance(analyzer, TransformerAnalyzer)
    assert analyzer.sentiment_model == str(tmp_path) and analyzer.emotion_model is None
    assert analyzer.label == f"transformers:{tmp_path.name}"


def test_transformers_without_a_model_or_with_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AnalyzerError, match="SALON_ANALYSIS_SENTIMENT_MODEL"):
        create_analyzer(AnalysisSettings(analyzer="transformers"))
    analyzer = create_analyzer(AnalysisSettings(emotion_model=str(tmp_path / "nope")))
    with pytest.raises(AnalyzerError, match="does not exist"):
        analyzer.check()


def test_a_missing_transformers_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    analyzer = TransformerAnalyzer(sentiment_model=str(tmp_path))
    with pytest.raises(AnalyzerError, match="local-models"):
        analyzer.check()
    with pytest.raises(AnalyzerError, match="local-models"):
        analyzer.analyze("hello")


# -- the transformers analyzer, wired to fake pipelines --------------------------------


class FakePipelines(TransformerAnalyzer):
    """The real analyzer with its pipeline loader replaced: labels as real models give them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded: list[str] = []

    def _load_pipeline(self, path: str) -> Any:
        self.loaded.append(path)

        def classify(texts: list[str]) -> list[list[dict[str, Any]]]:
            if path.endswith("sentiment"):
                return [
                    [
                        {"label": "positive", "score": 0.9 if "love" in t else 0.1},
                        {"label": "neutral", "score": 0.05},
                        {"label": "negative", "score": 0.05 if "love" in t else 0.85},
                    ]
                    for t in texts
                ]
            return [
                [
                    {"label": "joy", "score": 0.7},
                    {"label": "love", "score": 0.2},
                    {"label": "neutral", "score": 0.1},
                ]
                for _ in texts
            ]

        return classify


def test_transformer_models_replace_both_lexicons() -> None:
    analyzer = FakePipelines(sentiment_model="/m/sentiment", emotion_model="/m/emotion")
    loved, hated = analyzer.analyze_batch(
        [
            "I love this place, it is a wonderful city to live in",
            "Ich hasse diesen Ort, er ist wirklich schrecklich und laut",
        ]
    )
    assert analyzer.loaded == ["/m/sentiment", "/m/emotion"]
    assert loved.sentiment.compound == pytest.approx(0.85)
    assert loved.sentiment.pos == pytest.approx(0.9)
    assert hated.sentiment.compound == pytest.approx(-0.75)
    assert loved.emotions["joy"] == pytest.approx(0.8)  # joy + half of love
    assert loved.emotions["trust"] == pytest.approx(0.1)
    assert list(loved.emotions) == list(EMOTIONS)
    assert (loved.language, hated.language) == ("en", "de")
    assert analyzer.label == "transformers:sentiment+emotion"
    analyzer.analyze("again")
    assert len(analyzer.loaded) == 2  # loaded once


def test_the_lexicon_keeps_what_no_model_is_configured_for() -> None:
    analyzer = FakePipelines(sentiment_model="/m/sentiment")
    [a] = analyzer.analyze_batch([ANGRY])
    assert analyzer.loaded == ["/m/sentiment"]
    assert a.sentiment.compound == pytest.approx(-0.75)  # from the fake model
    assert _top(a.emotions) == "anger"  # from the NRC lexicon
    assert a.language == "en"


def test_sentiment_label_conventions() -> None:
    def s(*pairs: tuple[str, float]) -> Sentiment:
        return sentiment_from_labels([{"label": k, "score": v} for k, v in pairs])

    assert s(("POSITIVE", 0.8), ("NEGATIVE", 0.2)).compound == pytest.approx(0.6)
    three = s(("LABEL_0", 0.1), ("LABEL_1", 0.2), ("LABEL_2", 0.7))
    assert (three.neg, three.neu, three.pos) == pytest.approx((0.1, 0.2, 0.7))
    two = s(("LABEL_0", 0.9), ("LABEL_1", 0.1))
    assert two.compound == pytest.approx(-0.8)
    stars = s(("1 star", 0.5), ("3 stars", 0.25), ("5 stars", 0.25))
    assert (stars.neg, stars.neu, stars.pos) == pytest.approx((0.5, 0.25, 0.25))
    assert s(("weird", 1.0)) == Sentiment()


def test_emotion_label_synonyms() -> None:
    out = emotions_from_labels(
        [
            {"label": "Happiness", "score": 0.5},
            {"label": "optimism", "score": 0.2},
            {"label": "neutral", "score": 0.3},
        ]
    )
    assert out["joy"] == pytest.approx(0.5)
    assert out["anticipation"] == pytest.approx(0.2)
    assert sum(out.values()) == pytest.approx(0.7)


def _tiny_classifier(folder: Path, labels: list[str]) -> str:
    """A random-weight BERT text classifier saved like a real one (no hub needed)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir()
    words = ["i", "love", "hate", "this", "place", "fear", "the", "dark"]
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n"
    )
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(words) + 5,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
def test_the_real_pipeline_loads_local_folders(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="the transformers analyzer needs local-models")
    sentiment = _tiny_classifier(tmp_path / "sentiment", ["negative", "neutral", "positive"])
    emotion = _tiny_classifier(tmp_path / "emotion", ["anger", "fear", "joy", "neutral"])
    analyzer = create_analyzer(AnalysisSettings(sentiment_model=sentiment, emotion_model=emotion))
    analyzer.check()
    results = analyzer.analyze_batch(["I love this place", "I fear the dark " * 50])
    for a in results:
        s = a.sentiment
        assert s.pos + s.neu + s.neg == pytest.approx(1.0, abs=1e-4)
        assert s.compound == pytest.approx(s.pos - s.neg, abs=1e-6)
        assert list(a.emotions) == list(EMOTIONS)
        assert sum(a.emotions[k] for k in ("anger", "fear", "joy")) > 0
        assert a.emotions["trust"] == a.emotions["sadness"] == 0.0
    assert analyzer.label == "transformers:sentiment+emotion"
