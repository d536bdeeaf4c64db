"""Properties of the API models and the renderers over random specs (hypothesis).

Valid GemmaServers and GemmaTrainings, drawn from the accelerator table and every field's range, always
parse, survive a round trip through the wire form, and render: the renderer never raises (a server that
cannot fit is refused by the memory plan with the fields named), and the runtime config it writes is one
the runtime accepts. Invalid specs, made by breaking a random valid one (a wrong type anywhere, an unknown
field, a value past a bound of the CRD schema, a rule between fields), are always refused with a SpecError
whose every problem names a real field path, the broken one among them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gemma_operator.api.common import ModelVariant
from gemma_operator.api.crdgen import crd_for
from gemma_operator.api.v1alpha1 import API_VERSION, SERVER, TRAINING, GemmaServer, GemmaTraining
from gemma_operator.api.validation import SpecError, field_path, parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.placement import resolve
from gemma_operator.render.plan import DoesNotFitError, server_plan
from gemma_operator.render.serving import render_server, replicas
from gemma_operator.render.training import job_name, render_workload
from gemma_runtime import accelerators
from gemma_runtime.config import ServeConfig, TrainConfig

# Deterministic (the same examples on every run and machine) and small: this runs in the unit tier. No
# shrinking: it takes minutes on these specs, and a failure's message already names the field at fault.
PROPERTIES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
Doc = dict[str, Any]
Path = tuple[str | int, ...]
BIG_VARIANTS = [str(v) for v in ModelVariant if v != ModelVariant.TINY]

# --- valid specs -----------------------------------------------------------------------------------

DNS = st.from_regex(r"[a-z]([-a-z0-9]{0,14}[a-z0-9])?", fullmatch=True)
# Free text where users may put anything (values, annotations): the YAML-special characters included,
# so a value that could inject YAML into a template is tried.
TEXT = st.text(
    st.one_of(
        st.sampled_from("\"'\\\n\t:#{}[],&*!|>%@`- "),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=16,
)
# Keys of free maps: anything but the characters a field path uses as separators, so paths stay readable.
KEY = st.text(
    st.one_of(st.sampled_from("\"'\\{}#&*!|>%@`-/_"), st.characters(codec="ascii", categories=("L", "N"))),
    min_size=1,
    max_size=12,
)
QUANTITY = st.one_of(
    st.integers(0, 10**6), st.sampled_from(["500m", "2Gi", "1.5", "4", "100Mi", "1e3", "+3k"])
)
PATH = st.lists(DNS, min_size=1, max_size=3).map("/".join)


def uri(schemes: str) -> st.SearchStrategy[str]:
    return st.builds(lambda s, p: f"{s}://{p}", st.sampled_from(schemes.split()), PATH)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def obj(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Doc]:
    """A dict of the given fields, each left out when its strategy draws None (as omitempty would)."""
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not None})


@st.composite
def model_spec(draw: st.DrawFn, *, serving: bool) -> Doc:
    variant = draw(st.sampled_from(BIG_VARIANTS + ["tiny"] * 3))
    checkpoint = obj(
        uri=uri("gs hf pvc file"),
        format=optional(st.sampled_from(["orbax", "safetensors"])),
        secretRef=optional(obj(name=DNS, key=optional(DNS))),
    )
    needs_checkpoint = serving and variant != "tiny"
    cache = st.one_of(obj(claimName=DNS), obj(sizeLimit=optional(QUANTITY)))
    return draw(
        obj(
            variant=st.just(variant),
            instructionTuned=optional(st.booleans()),
            checkpoint=checkpoint if needs_checkpoint else optional(checkpoint),
            tokenizer=optional(obj(uri=uri("gs hf pvc file"))),
            cache=optional(cache),
        )
    )


@st.composite
def accelerator(draw: st.DrawFn, *, serving: bool) -> Doc:
    kind = draw(st.sampled_from(["cpu", "gpu", "tpu"]))
    acc: Doc
    if kind == "cpu":
        acc = {"type": "cpu"}
    elif kind == "gpu":
        gpu = draw(st.sampled_from(list(accelerators.GPUS.values())))
        acc = {"type": gpu.name, "count": draw(st.sampled_from(gpu.counts))}
    else:
        generation = draw(st.sampled_from(list(accelerators.TPUS.values())))
        slices = [s for s in generation.slices if s.hosts == 1 or not serving]
        tpu = draw(st.sampled_from(slices))
        acc = {"type": generation.name, "topology": tpu.topology}
        if tpu.topology == "2x4" and (tpu.chips_per_host == 4 or draw(st.booleans())):
            acc["chipsPerHost"] = tpu.chips_per_host
        if not serving and tpu.hosts > 1:
            acc["numSlices"] = draw(st.integers(1, 4))
    choice = draw(st.sampled_from(["none", "spot", "reservation"]))
    if choice == "spot":
        acc["spot"] = True
    elif choice == "reservation":
        acc["reservation"] = draw(DNS)
    return acc


def key_selector() -> st.SearchStrategy[Doc]:
    return obj(name=DNS, key=KEY, optional=optional(st.booleans()))


ENV = st.one_of(
    obj(name=st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True), value=TEXT),
    st.builds(
        lambda name, source: {"name": name, "valueFrom": source},
        st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True),
        st.one_of(
            st.builds(lambda s: {"secretKeyRef": s}, key_selector()),
            st.builds(lambda s: {"configMapKeyRef": s}, key_selector()),
        ),
    ),
)
TOLERATION = obj(
    key=optional(KEY),
    operator=optional(st.sampled_from(["Exists", "Equal"])),
    value=optional(TEXT),
    effect=optional(st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"])),
    tolerationSeconds=optional(st.integers(0, 10**6)),
)
POD = obj(
    serviceAccountName=optional(DNS),
    annotations=optional(st.dictionaries(KEY, TEXT, max_size=3)),
    labels=optional(st.dictionaries(KEY, TEXT, max_size=3)),
    nodeSelector=optional(st.dictionaries(KEY, TEXT, max_size=2)),
    tolerations=optional(st.lists(TOLERATION, max_size=2)),
    env=optional(st.lists(ENV, max_size=3)),
    resources=optional(
        obj(
            requests=optional(st.dictionaries(KEY, QUANTITY, max_size=2)),
            limits=optional(st.dictionaries(KEY, QUANTITY, max_size=2)),
        )
    ),
    priorityClassName=optional(DNS),
)
FRACTION = st.floats(0, 1, allow_nan=False)


@st.composite
def server_spec(draw: st.DrawFn) -> Doc:
    sequence = draw(st.integers(16, 131072))
    prefill = st.integers(16, min(sequence, 1024))
    minimum = draw(st.integers(1, 1000))
    autoscaling = obj(
        minReplicas=st.just(minimum),
        maxReplicas=st.integers(minimum, 1000),
        **dict(
            [
                draw(
                    st.sampled_from(
                        [
                            ("targetQueueDepth", optional(st.integers(1, 1000))),
                            ("targetBatchOccupancy", optional(st.integers(1, 100))),
                        ]
                    )
                )
            ]
        ),
    )
    return draw(
        obj(
            model=model_spec(serving=True),
            accelerator=accelerator(serving=True),
            replicas=optional(st.integers(0, 1000)),
            autoscaling=optional(autoscaling),
            serving=optional(
                obj(
                    maxBatchSize=optional(st.integers(1, 1024)),
                    maxSequenceLength=st.just(sequence),
                    maxPrefillLength=optional(prefill),  # unset: never longer than the sequence
                    maxQueuedRequests=optional(st.integers(0, 100000)),
                )
            ),
            quantization=optional(st.sampled_from(["none", "int8"])),
            sampling=optional(
                obj(
                    temperature=optional(st.floats(0, 2, allow_nan=False)),
                    topK=optional(st.integers(0, 1000)),
                    topP=optional(st.floats(0, 1, exclude_min=True, allow_nan=False)),
                    maxTokens=optional(st.integers(1, 10**5)),
                )
            ),
            updateStrategy=optional(
                obj(
                    type=optional(st.sampled_from(["RollingUpdate", "Recreate"])),
                    maxSurge=optional(st.integers(0, 10)),
                    maxUnavailable=optional(st.integers(0, 10)),
                )
            ),
            suspend=optional(st.booleans()),
            image=optional(st.builds(lambda p, t: f"{p}:{t}", PATH, DNS)),
            pod=optional(POD),
        )
    )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def parallelism(draw: st.DrawFn, acc: Doc) -> Doc | None:
    """A mesh whose product is the chips of all slices; one axis may be -1 (fill)."""
    if acc["type"] == "cpu":
        axes = draw(st.lists(st.integers(1, 8), min_size=3, max_size=3))
    else:
        tpu = accelerators.TPUS.get(acc["type"])
        if tpu is not None:
            chips = accelerators.tpu_slice(acc["type"], acc["topology"], acc.get("chipsPerHost")).chips
        else:
            chips = acc["count"]
        total = chips * acc.get("numSlices", 1)
        data = draw(st.sampled_from(_divisors(total)))
        tensor = draw(st.sampled_from(_divisors(total // data)))
        axes = [data, total // data // tensor, tensor]
    fill = draw(st.sampled_from([None, 0, 1, 2]))
    if fill is not None:
        axes[fill] = -1
    mesh: Doc | None = draw(optional(st.just(dict(zip(["data", "fsdp", "tensor"], axes, strict=True)))))
    return mesh


@st.composite
def training_spec(draw: st.DrawFn) -> Doc:
    acc = draw(accelerator(serving=False))
    return draw(
        obj(
            model=model_spec(serving=False),
            accelerator=st.just(acc),
            dataset=obj(
                uri=uri("gs pvc file"),
                format=optional(st.sampled_from(["jsonl", "text"])),
                textField=optional(KEY),
            ),
            training=obj(
                steps=st.integers(1, 10**6),
                globalBatchSize=optional(st.integers(1, 4096)),
                sequenceLength=optional(st.integers(16, 131072)),
                learningRate=optional(st.floats(0, 1, exclude_min=True, allow_nan=False)),
                schedule=optional(st.sampled_from(["cosine", "linear", "constant"])),
                warmupSteps=optional(st.integers(0, 10**4)),
                weightDecay=optional(FRACTION),
                maxGradNorm=optional(st.floats(0, 100, allow_nan=False)),
                precision=optional(st.sampled_from(["bf16", "f32"])),
                remat=optional(st.sampled_from(["none", "minimal", "full"])),
                gradientAccumulationSteps=optional(st.integers(1, 1024)),
                seed=optional(st.integers(0, 2**31)),
                lora=optional(
                    obj(rank=optional(st.integers(1, 1024)), alpha=optional(st.floats(0.001, 1e3)))
                ),
            ),
            parallelism=parallelism(acc),
            checkpoints=optional(
                obj(
                    uri=optional(uri("gs pvc file")),
                    intervalSteps=optional(st.integers(1, 10**5)),
                    keep=optional(st.integers(1, 100)),
                    resume=optional(st.sampled_from(["latest", "never"])),
                )
            ),
            failurePolicy=optional(obj(maxRestarts=optional(st.integers(0, 1000)))),
            ttlSecondsAfterFinished=optional(st.integers(0, 10**6)),
            queueName=optional(DNS),
            suspend=optional(st.booleans()),
            image=optional(st.builds(lambda p, t: f"{p}:{t}", PATH, DNS)),
            pod=optional(POD),
        )
    )


def resource(kind: str, name: str, spec: Doc) -> Doc:
    meta = {"name": name, "namespace": "team", "uid": PLACEHOLDER_UID, "generation": 1}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


SERVERS = st.builds(lambda n, s: resource("GemmaServer", n, s), DNS, server_spec())
TRAININGS = st.builds(lambda n, s: resource("GemmaTraining", n, s), DNS, training_spec())
RESOURCES = st.one_of(SERVERS, TRAININGS)

# --- valid specs render ----------------------------------------------------------------------------


def _pod_template(children: dict[str, Doc]) -> Doc:
    workload = children.get("Deployment") or children.get("Job") or children["JobSet"]
    spec = workload["spec"]
    if "replicatedJobs" in spec:
        spec = spec["replicatedJobs"][0]["template"]["spec"]
    template: Doc = spec["template"]
    return template


def _check_children(doc: Doc, children: list[Doc]) -> dict[str, Doc]:
    by_kind = {c["kind"]: c for c in children}
    assert len(by_kind) == len(children), [c["kind"] for c in children]  # one of each kind
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "team"
        assert meta["ownerReferences"][0]["uid"] == PLACEHOLDER_UID
        assert 0 < len(meta["name"]) <= (63 if child["kind"] == "Service" else 253)
    # What the user wrote comes through as written: rendering escapes, it never rewrites.
    pod = doc["spec"].get("pod", {})
    template = _pod_template(by_kind)
    for key, value in pod.get("annotations", {}).items():
        assert template["metadata"]["annotations"][key] == value
    container = template["spec"]["containers"][0]
    for var in pod.get("env", []):
        assert var in container["env"]
    return by_kind


def _does_not_fit(server: GemmaServer) -> str | None:
    try:
        server_plan(server.spec)
    except DoesNotFitError as refused:
        return str(refused)
    return None


@PROPERTIES
@given(SERVERS)
def test_a_valid_server_parses_round_trips_and_renders_or_does_not_fit(doc: Doc) -> None:
    server = parse(doc)
    assert isinstance(server, GemmaServer)
    assert parse({**server.to_api(), "metadata": doc["metadata"]}) == server
    refused = _does_not_fit(server)
    if refused is not None:
        # Refusing a model too large for the accelerator is a refusal naming fields, not a crash.
        assert "spec.model.variant" in refused
        assert "spec.accelerator" in refused
        return
    children = _check_children(doc, render_server(doc, server, Settings()))
    assert set(children) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} | (
        {"HorizontalPodAutoscaler"} if "autoscaling" in doc["spec"] else set()
    )
    assert children["Deployment"]["spec"]["replicas"] == replicas(server.spec)
    config = ServeConfig.model_validate(yaml.safe_load(children["ConfigMap"]["data"]["runtime.yaml"]))
    assert config.served_model_name == doc["metadata"]["name"]


@PROPERTIES
@given(TRAININGS, st.integers(0, 10**4))
def test_a_valid_training_parses_round_trips_and_renders(doc: Doc, attempt: int) -> None:
    training = parse(doc)
    assert isinstance(training, GemmaTraining)
    assert parse({**training.to_api(), "metadata": doc["metadata"]}) == training
    children = _check_children(doc, render_workload(doc, training, Settings(), attempt))
    slices = doc["spec"]["accelerator"].get("numSlices", 1)
    assert set(children) == {"ConfigMap", "Service", "JobSet" if slices > 1 else "Job"}
    workload = children.get("Job") or children["JobSet"]
    hosts = resolve(training.spec.accelerator).hosts
    assert workload["metadata"]["name"] == job_name(
        doc["metadata"]["name"], attempt, slices=slices, hosts=hosts
    )
    if slices > 1:  # JobSet's webhook refuses a JobSet whose last pod name would pass 63 characters
        assert len(f"{workload['metadata']['name']}-slice-{slices - 1}-{hosts - 1}-abcde") <= 63
    config = TrainConfig.model_validate(yaml.safe_load(children["ConfigMap"]["data"]["runtime.yaml"]))
    assert (config.name, config.num_slices) == (doc["metadata"]["name"], slices)


# --- invalid specs are refused with field paths ---------------------------------------------------

SCHEMAS = {
    "GemmaServer": crd_for(SERVER)["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
    "GemmaTraining": crd_for(TRAINING)["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
}


def _schema_at(schema: Doc, path: Path) -> Doc | None:
    """The schema node of a field path, or None when the path names no field."""
    node: Doc | None = schema
    for part in path:
        if node is None:
            return None
        if isinstance(part, int):
            node = node.get("items")
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            extra = node.get("additionalProperties")
            node = extra if isinstance(extra, dict) else None
    return node


def _nodes(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, (*path, index))


def _set(doc: Doc, path: Path, value: Any) -> None:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _refusal(doc: Doc) -> list[str]:
    """The problems of a refused resource; each must name a field path the CRD schema has."""
    with pytest.raises(SpecError) as refused:
        parse(doc)
    problems = refused.value.problems
    assert problems
    schema = SCHEMAS[doc["kind"]]
    for problem in problems:
        text, _, message = problem.partition(": ")
        assert message, problem
        parts: list[str | int] = []
        for name, index in re.findall(r"\.?([^.\[\]]+)|\[(\d+)\]", text):
            parts.append(int(index) if index else name)
        known = _schema_at(schema, tuple(parts)) is not None
        # An unknown field is named by its own (absent) path, below a field that exists.
        assert known or (message == "unknown field" and _schema_at(schema, tuple(parts[:-1]))), problem
    return problems


def _names(problems: list[str], path: Path) -> bool:
    return any(p.startswith(field_path(path) + ": ") for p in problems)


@PROPERTIES
@given(RESOURCES, st.data())
def test_a_wrong_type_anywhere_is_refused_naming_that_field(doc: Doc, data: st.DataObject) -> None:
    path, value = data.draw(st.sampled_from([(p, v) for p, v in _nodes(doc["spec"], ("spec",))][1:]))
    # Whatever the field's type, a value of another JSON kind cannot be coerced into it.
    wrong: Any = {"unexpected": 1} if isinstance(value, list) else ["x"] if isinstance(value, dict) else [{}]
    _set(doc, path, wrong)
    assert _names(_refusal(doc), path)


@PROPERTIES
@given(RESOURCES, st.data())
def test_an_unknown_field_is_refused_naming_it(doc: Doc, data: st.DataObject) -> None:
    objects = [p for p, v in _nodes(doc["spec"], ("spec",)) if isinstance(v, dict)]
    path = (*data.draw(st.sampled_from(objects)), "notAField")
    # In a typed object it is unknown; in a free map (labels, requests) an object is no valid value.
    _set(doc, path, {"x": 1})
    assert _names(_refusal(doc), path)


def _past_bound(node: Doc, draw: st.DrawFn) -> Any:
    """A value the schema node refuses by one of its bounds, or None if it has none."""
    choices: list[Any] = []
    if "enum" in node:
        choices.append(draw(st.text(max_size=8).filter(lambda s: s not in node["enum"])))
    if "maximum" in node:
        over = draw(st.integers(1, 1000))
        choices.append(node["maximum"] + (0 if node.get("exclusiveMaximum") else over))
    if "minimum" in node:
        under = draw(st.integers(1, 1000))
        choices.append(node["minimum"] - (0 if node.get("exclusiveMinimum") else under))
    if "maxLength" in node:
        choices.append("a" * (node["maxLength"] + draw(st.integers(1, 100))))
    if "pattern" in node:
        candidates = ["", " ", "Not Valid!", "-x-", "x:/y", "10 Gi", "5x", "../etc"]
        choices += [c for c in candidates if not re.search(node["pattern"], c)][:2]
    return draw(st.sampled_from(choices)) if choices else None


@PROPERTIES
@given(RESOURCES, st.data())
def test_a_value_past_a_schema_bound_is_refused_naming_that_field(doc: Doc, data: st.DataObject) -> None:
    schema = SCHEMAS[doc["kind"]]
    fields = []  # every bounded field of an object present in the spec, set or not
    for path, value in _nodes(doc["spec"], ("spec",)):
        node = _schema_at(schema, path)
        if isinstance(value, dict) and node is not None:
            keys = node.get("properties", {}) or (dict.fromkeys(value, node.get("additionalProperties")))
            for key, child in keys.items():
                if isinstance(child, dict) and {"enum", "maximum", "minimum", "maxLength", "pattern"} & set(
                    child
                ):
                    fields.append(((*path, key), child))
    path, node = data.draw(st.sampled_from(fields))
    bad = _past_bound(node, data.draw)
    assert bad is not None
    _set(doc, path, bad)
    assert _names(_refusal(doc), path)


Breaker = Callable[[Doc, st.DataObject], Path]


def _autoscaling_inverted(spec: Doc, data: st.DataObject) -> Path:
    low = data.draw(st.integers(1, 999))
    spec["autoscaling"] = {"minReplicas": data.draw(st.integers(low + 1, 1000)), "maxReplicas": low}
    return ("spec", "autoscaling", "minReplicas")


def _prefill_over_sequence(spec: Doc, data: st.DataObject) -> Path:
    sequence = data.draw(st.integers(16, 4096))
    spec["serving"] = {
        "maxSequenceLength": sequence,
        "maxPrefillLength": data.draw(st.integers(sequence + 1, 8192)),
    }
    return ("spec", "serving", "maxPrefillLength")


def _spot_and_reservation(spec: Doc, data: st.DataObject) -> Path:
    spec["accelerator"].update(spot=True, reservation=data.draw(DNS))
    return ("spec", "accelerator", "reservation")


def _cache_both_ways(spec: Doc, data: st.DataObject) -> Path:
    spec["model"]["cache"] = {"claimName": data.draw(DNS), "sizeLimit": data.draw(QUANTITY)}
    return ("spec", "model", "cache", "sizeLimit")


def _env_both_or_neither(spec: Doc, data: st.DataObject) -> Path:
    env = spec.setdefault("pod", {}).setdefault("env", [])
    both = {"value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    env.append({"name": "BROKEN", **data.draw(st.sampled_from([both, {}]))})
    return ("spec", "pod", "env", len(env) - 1)


def _topology_off_tpu(spec: Doc, data: st.DataObject) -> Path:
    spec["accelerator"] = {"type": "cpu", "topology": data.draw(st.sampled_from(["2x4", "1x1"]))}
    return ("spec", "accelerator", "topology")


def _gpu_count_not_in_table(spec: Doc, data: st.DataObject) -> Path:
    gpu = data.draw(st.sampled_from(list(accelerators.GPUS.values())))
    spec["accelerator"] = {
        "type": gpu.name,
        "count": data.draw(st.integers(1, 16).filter(lambda c: c not in gpu.counts)),
    }
    return ("spec", "accelerator", "count")


def _tpu_topology_not_in_table(spec: Doc, data: st.DataObject) -> Path:
    generation = data.draw(st.sampled_from(list(accelerators.TPUS.values())))
    dims = data.draw(st.lists(st.integers(1, 16), min_size=2, max_size=3))
    topology = "x".join(map(str, dims))
    if topology in generation.topologies:
        topology = "3x3"
    spec["accelerator"] = {"type": generation.name, "topology": topology}
    return ("spec", "accelerator", "topology")


def _server_on_several_hosts(spec: Doc, data: st.DataObject) -> Path:
    generation = data.draw(st.sampled_from(list(accelerators.TPUS.values())))
    tpu = data.draw(st.sampled_from([s for s in generation.slices if s.hosts > 1]))
    spec["accelerator"] = {
        "type": generation.name,
        "topology": tpu.topology,
        "chipsPerHost": tpu.chips_per_host,
    }
    return ("spec", "accelerator", "topology")


def _variant_without_checkpoint(spec: Doc, data: st.DataObject) -> Path:
    spec["model"] = {"variant": data.draw(st.sampled_from(BIG_VARIANTS))}
    return ("spec", "model", "checkpoint")


def _mesh_not_the_chips(spec: Doc, data: st.DataObject) -> Path:
    generation = data.draw(st.sampled_from(list(accelerators.TPUS.values())))
    tpu = data.draw(st.sampled_from(generation.slices))
    spec["accelerator"] = {
        "type": generation.name,
        "topology": tpu.topology,
        "chipsPerHost": tpu.chips_per_host,
    }
    axes = data.draw(
        st.lists(st.integers(1, 64), min_size=3, max_size=3).filter(lambda a: math.prod(a) != tpu.chips)
    )
    spec["parallelism"] = dict(zip(["data", "fsdp", "tensor"], axes, strict=True))
    return ("spec", "parallelism")


def _two_fills(spec: Doc, data: st.DataObject) -> Path:
    spec["accelerator"] = {"type": "cpu"}
    keep = data.draw(st.sampled_from(["data", "fsdp", "tensor"]))
    spec["parallelism"] = {axis: 1 if axis == keep else -1 for axis in ("data", "fsdp", "tensor")}
    return ("spec", "parallelism")


def _slices_of_one_host(spec: Doc, data: st.DataObject) -> Path:
    generation = data.draw(st.sampled_from(list(accelerators.TPUS.values())))
    topology = data.draw(st.sampled_from(generation.single_host_topologies()))
    spec["accelerator"] = {
        "type": generation.name,
        "topology": topology,
        "numSlices": data.draw(st.integers(2, 64)),
    }
    spec.pop("parallelism", None)
    return ("spec", "accelerator", "numSlices")


SHARED: list[Breaker] = [
    _spot_and_reservation,
    _cache_both_ways,
    _env_both_or_neither,
    _topology_off_tpu,
    _gpu_count_not_in_table,
    _tpu_topology_not_in_table,
]
BREAKERS = {
    "GemmaServer": [
        *SHARED,
        _autoscaling_inverted,
        _prefill_over_sequence,
        _server_on_several_hosts,
        _variant_without_checkpoint,
    ],
    "GemmaTraining": [*SHARED, _mesh_not_the_chips, _two_fills, _slices_of_one_host],
}


@PROPERTIES
@given(RESOURCES, st.data())
def test_a_broken_rule_between_fields_is_refused_naming_the_field(doc: Doc, data: st.DataObject) -> None:
    breaker = data.draw(st.sampled_from(BREAKERS[doc["kind"]]))
    path = breaker(doc["spec"], data)
    assert _names(_refusal(doc), path)
