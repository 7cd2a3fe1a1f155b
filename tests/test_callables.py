"""Every kind of callable, decorated: same routing, and transparent against the undecorated original."""

from __future__ import annotations

import asyncio
import copy
import inspect
import pickle
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import instrument
from instrument.testing import recording


def plain(x: int, *, scale: float = 1.0) -> dict[str, float]:
    """A plain function."""
    return {"loss": x * scale}


def generator(n: int) -> Iterator[dict[str, float]]:
    """A generator function."""
    for i in range(n):
        yield {"loss": float(i)}


async def coroutine(x: int) -> dict[str, float]:
    """A coroutine function."""
    await asyncio.sleep(0)
    return {"loss": float(x)}


async def async_generator(n: int) -> AsyncIterator[dict[str, float]]:
    """An async generator function."""
    for i in range(n):
        await asyncio.sleep(0)
        yield {"loss": float(i)}


ORIGINALS = [plain, generator, coroutine, async_generator]
DECORATORS: list[Callable[[Any], Any]] = [
    instrument.training_stage("operator"),
    instrument.eval_summary,
    instrument.eval_summary(prefix="e"),
    instrument.pipeline(project="p"),
]


@pytest.mark.parametrize("decorate", DECORATORS, ids=["training_stage", "eval_summary", "eval_summary(prefix)", "pipeline"])
@pytest.mark.parametrize("original", ORIGINALS, ids=lambda f: f.__name__)
def test_decorated_function_is_transparent(original: Callable[..., Any], decorate: Callable[[Any], Any]) -> None:
    """Name, qualname, doc, signature, module and the kind predicates equal the undecorated original's."""
    decorated = decorate(original)
    assert (original.__name__, original.__qualname__, original.__doc__, original.__module__) == (
        decorated.__name__, decorated.__qualname__, decorated.__doc__, decorated.__module__)
    assert inspect.signature(original) == inspect.signature(decorated)
    predicates = (inspect.iscoroutinefunction, inspect.isgeneratorfunction, inspect.isasyncgenfunction)
    assert [p(original) for p in predicates] == [p(decorated) for p in predicates]
    assert decorated.__wrapped__ is original


def test_coroutine_wrapper_is_itself_a_coroutine_function() -> None:
    """Calling a decorated coroutine function returns a coroutine, so the awaited body runs inside the stage."""
    decorated = instrument.training_stage("operator")(coroutine)
    with recording():
        pending = decorated(1)
        assert inspect.iscoroutine(pending)
        assert {"loss": 1.0} == asyncio.run(pending)


def test_run_config_is_transparent_on_plain_and_coroutine_functions() -> None:
    """run_config keeps name, signature and coroutine-ness of what it decorates."""
    for original in (plain, coroutine):
        decorated = instrument.run_config(original)
        assert (original.__qualname__, inspect.signature(original), inspect.iscoroutinefunction(original)) == (
            decorated.__qualname__, inspect.signature(decorated), inspect.iscoroutinefunction(decorated))


def test_every_callable_kind_routes_the_same_points() -> None:
    """Plain, generator, coroutine and async generator stages give the same history values."""
    stage = instrument.training_stage("operator")

    async def drain() -> list[dict[str, float]]:
        return [item async for item in stage(async_generator)(2)]

    with recording() as recorded:
        assert {"loss": 0.0} == stage(plain)(0)
        assert {"loss": 1.0} == stage(plain)(1)
        assert [{"loss": 0.0}, {"loss": 1.0}] == list(stage(generator)(2))
        assert {"loss": 0.0} == asyncio.run(stage(coroutine)(0))
        assert {"loss": 1.0} == asyncio.run(stage(coroutine)(1))
        assert [{"loss": 0.0}, {"loss": 1.0}] == asyncio.run(drain())
    assert [0.0, 1.0] * 4 == [value for _, value in recorded.run().series("operator/loss")]


def test_every_callable_kind_of_eval_lands_in_the_summary() -> None:
    """An eval of each kind writes its last value to the summary and no history row."""
    evaluate = instrument.eval_summary(prefix="eval")
    with recording() as recorded:
        evaluate(plain)(3)
        list(evaluate(generator)(2))
        asyncio.run(evaluate(coroutine)(5))

        async def drain() -> None:
            async for _ in evaluate(async_generator)(3):
                pass

        asyncio.run(drain())
    run = recorded.run()
    assert ([], 2.0) == (run.history, run.summary["eval/loss"])


def test_generator_closed_early_keeps_what_it_yielded() -> None:
    """A stage generator left with ``break`` records the points yielded before, and is closed."""
    closed = []

    @instrument.training_stage("operator")
    def steps() -> Iterator[dict[str, int]]:
        try:
            for i in range(10):
                yield {"i": i}
        finally:
            closed.append(True)

    with recording() as recorded:
        for item in steps():
            if item["i"] == 2:
                break
    assert ([0, 1, 2], [True]) == ([v for _, v in recorded.run().series("operator/i")], closed)


def test_async_generator_closed_early_keeps_what_it_yielded() -> None:
    """An async stage generator left early records the points yielded before."""
    stage = instrument.training_stage("operator")(async_generator)

    async def take_two() -> None:
        stream = stage(10)
        async for item in stream:
            if item["loss"] == 1.0:
                break
        await stream.aclose()  # type: ignore[attr-defined]

    with recording() as recorded:
        asyncio.run(take_two())
    assert [0.0, 1.0] == [v for _, v in recorded.run().series("operator/loss")]


def test_generator_send_and_throw_reach_the_original() -> None:
    """Values sent into and exceptions thrown into a decorated generator reach the original."""

    @instrument.training_stage("operator")
    def echo() -> Iterator[dict[str, Any]]:
        received: Any = None
        while True:
            try:
                received = yield {"got": received or 0}
            except KeyError:
                received = -1

    with recording():
        gen = echo()
        next(gen)
        assert {"got": 5} == gen.send(5)
        assert {"got": -1} == gen.throw(KeyError("k"))
        gen.close()


def test_user_exception_propagates_unchanged_from_every_kind() -> None:
    """An exception raised by the decorated body reaches the caller as the same object."""
    error = RuntimeError("boom")

    def fail() -> dict[str, float]:
        raise error

    async def afail() -> dict[str, float]:
        raise error

    with pytest.raises(RuntimeError) as caught, recording():
        instrument.training_stage("operator")(fail)()
    assert caught.value is error
    with pytest.raises(RuntimeError) as caught_async, recording():
        asyncio.run(instrument.eval_summary(afail)())
    assert caught_async.value is error


class Model:
    """A class with decorated methods of every kind."""

    scale = 2.0

    def __init__(self) -> None:
        self.offset = 1.0

    @instrument.training_stage("model")
    def step(self, x: float) -> dict[str, float]:
        """An instance method."""
        return {"loss": x + self.offset}

    @instrument.training_stage("model")
    def steps(self, n: int) -> Iterator[dict[str, float]]:
        """An instance generator method."""
        for i in range(n):
            yield {"loss": i + self.offset}

    @classmethod
    @instrument.eval_summary(prefix="cls")
    def evaluate(cls, x: float) -> dict[str, float]:
        """A classmethod, decorator under @classmethod."""
        return {"score": x * cls.scale}

    @instrument.eval_summary(prefix="cls_outer")
    @classmethod
    def evaluate_outer(cls, x: float) -> dict[str, float]:
        """A classmethod, decorator above @classmethod."""
        return {"score": x * cls.scale}

    @instrument.training_stage("cls_gen")
    @classmethod
    def class_steps(cls, n: int) -> Iterator[dict[str, float]]:
        """A classmethod generator, decorator above @classmethod."""
        for i in range(n):
            yield {"loss": i * cls.scale}

    @staticmethod
    @instrument.eval_summary(prefix="static")
    def score(x: float) -> dict[str, float]:
        """A staticmethod, decorator under @staticmethod."""
        return {"score": x}

    @instrument.eval_summary(prefix="static_outer")
    @staticmethod
    async def score_outer(x: float) -> dict[str, float]:
        """An async staticmethod, decorator above @staticmethod."""
        return {"score": x}


def test_methods_of_every_kind_route_their_values() -> None:
    """Instance methods, classmethods and staticmethods (decorator above or below) all land."""
    model = Model()
    with recording() as recorded:
        assert {"loss": 2.0} == model.step(1.0)
        assert [{"loss": 1.0}, {"loss": 2.0}] == list(model.steps(2))
        assert {"score": 6.0} == Model.evaluate(3.0) == model.evaluate(3.0)
        assert {"score": 8.0} == Model.evaluate_outer(4.0)
        assert [{"loss": 0.0}, {"loss": 2.0}] == list(Model.class_steps(2))
        assert {"score": 5.0} == Model.score(5.0)
        assert {"score": 7.0} == asyncio.run(Model.score_outer(7.0))
    run = recorded.run()
    assert [2.0, 1.0, 2.0] == [v for _, v in run.series("model/loss")]
    assert [0.0, 2.0] == [v for _, v in run.series("cls_gen/loss")]
    summary = {k: v for k, v in run.summary.items() if k.endswith("/score")}
    assert {"cls/score": 6.0, "cls_outer/score": 8.0, "static/score": 5.0, "static_outer/score": 7.0} == summary


def test_methods_are_transparent() -> None:
    """Decorated methods keep qualname, doc and the bound signature of the undecorated ones."""
    assert ("Model.step", "An instance method.") == (Model.step.__qualname__, Model.step.__doc__)
    assert "(x: 'float') -> 'dict[str, float]'" == str(inspect.signature(Model().step))
    assert "(x: 'float') -> 'dict[str, float]'" == str(inspect.signature(Model.evaluate_outer))
    assert "(n: 'int') -> 'Iterator[dict[str, float]]'" == str(inspect.signature(Model.class_steps))
    assert inspect.iscoroutinefunction(Model.score_outer)
    assert inspect.isgeneratorfunction(Model.class_steps)


def test_run_config_writes_the_returned_mapping_and_returns_it_unchanged() -> None:
    """run_config (plain, called form, coroutine) writes nested config at the top level and returns the value."""
    config = {"model": {"width": 64}, "data": ("a", "b")}

    @instrument.run_config
    def make() -> dict[str, Any]:
        return config

    @instrument.run_config()
    async def make_async() -> dict[str, Any]:
        return {"seed": 3}

    with recording() as recorded:
        assert make() is config
        assert {"seed": 3} == asyncio.run(make_async())
    assert {"model": {"width": 64}, "data": ["a", "b"], "seed": 3} == recorded.run().config


def test_run_config_refuses_generators_and_reports_non_mappings() -> None:
    """run_config on a generator function raises TypeError; a non-mapping result is reported and returned."""
    with pytest.raises(TypeError, match="generator"):
        instrument.run_config(generator)

    @instrument.run_config
    def make() -> list[int]:
        return [1, 2]

    with recording(strict=False) as recorded, pytest.warns(instrument.InstrumentationWarning, match="make.*list"):
        assert [1, 2] == make()
    assert [] == recorded.runs


def test_eval_summary_takes_its_prefix_positionally() -> None:
    """``@eval_summary("eval_small")`` is ``@eval_summary(prefix="eval_small")``."""

    @instrument.eval_summary("eval_small")
    def evaluate() -> dict[str, float]:
        return {"nrmse": 0.1}

    with recording() as recorded:
        evaluate()
    assert 0.1 == recorded.run().summary["eval_small/nrmse"]


def test_run_config_takes_dataclasses_attrs_and_omegaconf() -> None:
    """run_config writes a dataclass, an attrs instance and an OmegaConf config with nesting kept."""
    import dataclasses
    import pathlib

    import attrs

    omegaconf = pytest.importorskip("omegaconf")

    @dataclasses.dataclass
    class Data:
        root: pathlib.Path

    @attrs.define
    class Train:
        data: Data
        steps: tuple[int, ...]

    @instrument.run_config
    def from_attrs() -> Train:
        return Train(Data(pathlib.Path("d")), (1, 2))

    @instrument.run_config
    def from_omegaconf() -> Any:
        return omegaconf.OmegaConf.create({"model": {"width": 8, "name": "${model.width}x"}})

    with recording() as recorded:
        made = from_attrs()
        from_omegaconf()
    assert isinstance(made, Train)
    assert {"data": {"root": "d"}, "steps": [1, 2], "model": {"width": 8, "name": "8x"}} == recorded.run().config


@instrument.training_stage("pickled")
def pickled_stage(x: float) -> dict[str, float]:
    """A module-level stage."""
    return {"loss": x}


@instrument.eval_summary
def pickled_eval() -> dict[str, float]:
    """A module-level eval."""
    return {"score": 1.0}


@instrument.run_config
def pickled_config() -> dict[str, int]:
    """A module-level config function."""
    return {"seed": 1}


@instrument.pipeline(project="p", mode="disabled")
def pickled_pipeline() -> int:
    """A module-level pipeline function."""
    return 3


def test_decorated_functions_pickle_and_copy_like_the_originals() -> None:
    """Module-level decorated functions of every decorator, methods, classmethods and staticmethods
    pickle by reference and copy as themselves; a loaded stage still logs; a bound method keeps its
    instance's state."""
    for function in (pickled_stage, pickled_eval, pickled_config, pickled_pipeline):
        assert function is pickle.loads(pickle.dumps(function))
        assert (function, function) == (copy.copy(function), copy.deepcopy(function))
    for method in (Model.step, Model.evaluate_outer, Model.score_outer, Model.class_steps):
        loaded = pickle.loads(pickle.dumps(method))
        assert (method.__qualname__, method.__wrapped__) == (loaded.__qualname__, loaded.__wrapped__)
    model = Model()
    model.offset = 5.0
    with recording() as recorded:
        assert (6.0, 6.0) == (pickle.loads(pickle.dumps(model.step))(1.0)["loss"], copy.deepcopy(model.step)(1.0)["loss"])
    with recording() as recorded:
        pickle.loads(pickle.dumps(pickled_stage))(0.5)
    assert [(0, 0.5)] == recorded.run().series("pickled/loss")


def test_a_decorated_local_function_fails_to_pickle_as_the_original_does() -> None:
    """A decorated function defined inside a function is not picklable, with pickle's own error."""

    @instrument.training_stage("local")
    def local() -> None:
        """A local function."""

    with pytest.raises((AttributeError, pickle.PicklingError), match="local"):
        pickle.dumps(local)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: instrument.training_stage("s", summary="min"), (TypeError, (
            "instrument.training_stage('s'): summary must be a mapping of metric name to wandb summary op, "
            "such as {'loss': 'min'}, got str 'min'"))),
        (lambda: instrument.training_stage(plain), (TypeError, (
            "instrument.training_stage needs the name as its argument: write "
            "@instrument.training_stage(\"<name>\") above 'plain', not a bare @instrument.training_stage"))),
        (lambda: instrument.training_stage("s")(3), (TypeError, (
            "instrument.training_stage('s') decorates a function or method, got int 3"))),
        (lambda: instrument.eval_summary(prefix="e")("x"), (TypeError, (
            "instrument.eval_summary(prefix='e') decorates a function or method, got str 'x'"))),
        (lambda: instrument.run_config("x"), (TypeError, "instrument.run_config decorates a function or method, got str 'x'")),
        (lambda: instrument.pipeline(config=[1, 2]), (TypeError, (
            "instrument.pipeline: config must be a mapping or a settings object (a dataclass, attrs or pydantic "
            "instance, an argparse.Namespace, an OmegaConf config), got list [1, 2]"))),
        (lambda: instrument.pipeline(project=3), (TypeError, "instrument.pipeline: project must be a string, got int 3")),
        (lambda: instrument.pipeline(project="p", tags="a,b"), (TypeError, (
            "instrument.pipeline: tags must be a list or tuple of strings, got str 'a,b'"))),
        (lambda: instrument.pipeline(plain, mode="offline"), (TypeError, (
            "instrument.pipeline: project must be a string, got a function; to give options write "
            "@instrument.pipeline(project=..., ...) above the function"))),
        (lambda: instrument.pipeline(project="p")(3), (TypeError, "instrument.pipeline decorates a function or method, got int 3")),
        (lambda: instrument.configure(project=3), (TypeError, "instrument.configure: project must be a string, got int 3")),
        (lambda: instrument.create_wandb_context(config="lr=1"), (TypeError, (
            "instrument.create_wandb_context: config must be a mapping or a settings object (a dataclass, attrs or "
            "pydantic instance, an argparse.Namespace, an OmegaConf config), got str 'lr=1'"))),
    ],
)
def test_wrong_decorator_arguments_raise_naming_the_decorator_argument_and_type(
    call: Callable[[], Any], expected: tuple[type[Exception], str]
) -> None:
    """A wrong argument to a decorator (or configure) raises when it is applied, naming the
    decorator, the argument and the value's type, and saying how to write it."""
    with pytest.raises(Exception) as caught:
        call()
    assert expected == (type(caught.value), str(caught.value))


def test_pipeline_works_bare_like_eval_summary() -> None:
    """``@instrument.pipeline`` without parentheses makes a pipeline run per call and returns the value."""

    @instrument.pipeline
    def orchestrate(x: int) -> int:
        """The entry point."""
        pickled_stage(0.5)
        return x * 2

    assert ("orchestrate", "The entry point.") == (orchestrate.__name__, orchestrate.__doc__)
    with recording() as recorded:
        assert 6 == orchestrate(3)
    run = recorded.run()
    assert ("pipeline", [(0, 0.5)], 0) == (run.job_type, run.series("pickled/loss"), run.exit_code)


@instrument.training_stage("inside")
def inside_step(i: int) -> dict[str, float]:
    """A stage called inside a pipeline's body."""
    return {"i": float(i)}


@instrument.pipeline(project="p")
def plain_pipeline() -> int:
    """A pipeline whose body is a plain function."""
    inside_step(0)
    inside_step(1)
    return 2


@instrument.pipeline(project="p")
def generator_pipeline() -> Iterator[int]:
    """A pipeline whose body is a generator: stages run between its items."""
    for i in range(2):
        inside_step(i)
        yield i


@instrument.pipeline(project="p")
async def coroutine_pipeline() -> int:
    """A pipeline whose body is a coroutine."""
    for i in range(2):
        await asyncio.sleep(0)
        inside_step(i)
    return 2


@instrument.pipeline(project="p")
async def async_generator_pipeline() -> AsyncIterator[int]:
    """A pipeline whose body is an async generator."""
    for i in range(2):
        await asyncio.sleep(0)
        inside_step(i)
        yield i


async def _collect(items: AsyncIterator[int]) -> list[int]:
    return [item async for item in items]


PIPELINE_CALLS: dict[str, Callable[[], Any]] = {
    "plain": plain_pipeline,
    "generator": lambda: list(generator_pipeline()),
    "coroutine": lambda: asyncio.run(coroutine_pipeline()),
    "async_generator": lambda: asyncio.run(_collect(async_generator_pipeline())),
}


@pytest.mark.parametrize("kind", sorted(PIPELINE_CALLS))
def test_a_pipeline_run_spans_the_body_of_every_kind_of_callable(kind: str) -> None:
    """``@pipeline`` on a plain, generator, coroutine or async generator function: the stages its
    body calls write into the one pipeline run, which finishes when the body is over."""
    with recording() as recorded:
        result = PIPELINE_CALLS[kind]()
    (run,) = recorded.runs
    assert ({"plain": 2, "coroutine": 2}.get(kind, [0, 1]), "pipeline", [(0, 0.0), (1, 1.0)], True, 0) == (
        result, run.job_type, run.series("inside/i"), run.finished, run.exit_code)


def test_a_generator_pipeline_left_early_or_raising_finishes_its_run_with_its_exit_code() -> None:
    """Left with ``break``, a generator pipeline's run keeps what ran and exits 0; a body that raises
    propagates the exception unchanged and its run exits 1."""

    @instrument.pipeline(project="p")
    def failing() -> Iterator[int]:
        inside_step(0)
        yield 0
        raise KeyError("boom")

    with recording() as recorded:
        for _ in generator_pipeline():
            break
        with pytest.raises(KeyError, match="boom"):
            list(failing())
    assert [([(0, 0.0)], True, 0), ([(0, 0.0)], True, 1)] == [
        (run.series("inside/i"), run.finished, run.exit_code) for run in recorded.runs]
