"""Fuzzing the live controller from its own OpenAPI document (schemathesis 4), on SQLite and on PostgreSQL.

Every operation gets schema-valid requests, schema-invalid ones, and schema-valid ones aimed at
real uploads and objects (random ids mostly meet a 404 and stop there). The property is no 5xx,
plus schemathesis' default checks, bar the ones this API fails on purpose or by a known gap of its
document (see EXEMPT).

schemathesis' own pytest loader (``schemathesis.pytest.from_fixture``) does not run under pytest 9
(it sets ``Function._nodeid``, which pytest 9 no longer has), and the service's URL is known only
once its fixture runs; so the test draws cases from each operation's Hypothesis strategy itself.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.mutations import OperatorKind
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.pg import fresh_database_url
from tests.service_fixtures import ServiceProcess, new_bucket, run_service
from tests.test_service_api import ok, put

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25  # per operation and pass: about 20 s per database on two cores


def _service_error(response: Any) -> bool:
    """One of the service's own error answers: {"detail": str, "code": str}."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("detail"), str) and isinstance(body.get("code"), str)


def _no_route(response: Any) -> bool:
    """Starlette's 404 when no route matches (a path parameter holding a newline does not match {key:path})."""
    return response.status_code == 404 and response.text == '{"detail":"Not Found"}'


def response_schema_conformance_but_service_422(ctx: Any, response: Any, case: Any) -> bool | None:
    """Known gaps of the document: the 422 it describes is FastAPI's list of errors, while the service's own rules
    (key bytes, control characters, '..', part counts) answer 422 as {"detail": str, "code": str}; and the 404 of
    a path no route matches has no code."""
    if (response.status_code == 422 and _service_error(response)) or _no_route(response):
        return None
    return response_schema_conformance(ctx, response, case)  # type: ignore[no-any-return]


def status_code_conformance_but_400(ctx: Any, response: Any, case: Any) -> bool | None:
    """Known gap of the document: it lists no 400, which comes for a body that is not JSON at all (FastAPI's
    answer) and for a request S3 refuses (e.g. InvalidPart: an ETag that is not the part's)."""
    if response.status_code == 400 and ("error parsing the body" in response.text or _service_error(response)):
        return None
    return status_code_conformance(ctx, response, case)  # type: ignore[no-any-return]


def _lax(value: Any) -> bool:
    """A value pydantic's lax mode takes for a number: true/false, a numeric string, a whole float."""
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def negative_data_rejection_but_lax_numbers(ctx: Any, response: Any, case: Any) -> bool | None:
    """pydantic's lax mode (FastAPI's default) takes {"size": true} as 1 and {"size": "5"} as 5: a body whose only
    invalidity is such a number is accepted on purpose."""
    mutations = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    mutations = getattr(mutations, "mutations", None) or []
    if mutations and all(m.operator == OperatorKind.CHANGE_TYPE and m.parameter_location == ParameterLocation.BODY
                         and _lax(m.new_value) for m in mutations):
        return None
    return negative_data_rejection(ctx, response, case)  # type: ignore[no-any-return]


# Three default checks run in the narrowed forms above. positive_data_acceptance is left out: the schema cannot say
# every rule (1,024 bytes of UTF-8, no control characters, no '..' segment, part numbers within a declared size,
# transitions), so valid-looking data is refused on purpose with a 422 or a 409.
EXEMPT = [positive_data_acceptance, response_schema_conformance, status_code_conformance, negative_data_rejection]
NARROWED = [response_schema_conformance_but_service_422, status_code_conformance_but_400,
            negative_data_rejection_but_lax_numbers]


class RealTargets:
    """Fresh uploads and an existing object, swapped into schema-valid cases so that they get past the 404."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.client = service.client("alice")
        self.key = f"fuzz/{uuid.uuid4().hex}"
        put(ok(self.client.post("/uploads/url", json={"key": self.key}))["url"], b"an object to download")

    def file_upload(self) -> str:
        """A pending upload of a new file, with a part 1 in it."""
        upload = ok(self.client.post(f"/files/f-{uuid.uuid4().hex[:12]}/multipart_uploads", json={}), 201)
        put(ok(self.client.post(f"/multipart_uploads/{upload['upload_id']}/part/1/presigned_post"))["url"], b"p1")
        return str(upload["upload_id"])

    def key_upload(self) -> tuple[str, str]:
        key = f"fuzz/{uuid.uuid4().hex}"
        return key, str(ok(self.client.post("/uploads/multipart/init", json={"key": key}))["upload_id"])

    def aim(self, case: Any) -> None:
        if "upload_id" in (case.path_parameters or {}):
            case.path_parameters["upload_id"] = self.file_upload()
        if case.path_parameters and "key" in case.path_parameters:
            case.path_parameters["key"] = self.key
        for part in ("body", "query"):
            value = getattr(case, part)
            if isinstance(value, dict) and "upload_id" in value:
                value["key"], value["upload_id"] = self.key_upload()

    def close(self) -> None:
        self.client.close()


# Operations that name an existing upload or object, in their path, query or body.
KEY_CENTRIC = {"/uploads/multipart/part-url", "/uploads/multipart/complete", "/uploads/multipart/abort",
               "/uploads/multipart/parts"}


def names_a_target(operation: Any) -> bool:
    return "{upload_id}" in operation.path or "{key}" in operation.path or operation.path in KEY_CENTRIC


def fuzz(operation: Any, mode: GenerationMode, targets: RealTargets | None) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        if targets is not None:
            targets.aim(case)
        case.call_and_validate(excluded_checks=EXEMPT, additional_checks=NARROWED, timeout=60)

    with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (GET /health has no parameters)
        run()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed_service(request: pytest.FixtureRequest, s3_server: Any,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The module's service, without the limit on wrong tokens per address: the negative cases spoil the token
    hundreds of times a minute, and schemathesis' auth check wants each one answered 401, not 429."""
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    url = fresh_database_url(request.param, request, folder)
    with run_service(s3_server, new_bucket(s3_server), url, folder, config={"sign_in_limit": 10**9}) as running:
        yield running


def test_fuzz_the_api(fuzzed_service: ServiceProcess) -> None:
    module_service = fuzzed_service
    # alice's token through the document's own security scheme: valid cases carry it, and invalid ones may drop or
    # spoil it (which must then be a 401).
    bearer = {"bearer": module_service.tokens["alice"]}
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": bearer}}})
    schema = schemathesis.openapi.from_url(f"{module_service.base_url}/openapi.json", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    # issue 25 added health live/ready, review(s), history and the list of own uploads
    assert len(operations) == 21, [op.label for op in operations]
    targets = RealTargets(module_service)
    failures: list[str] = []
    try:
        for operation in operations:
            passes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
            if names_a_target(operation):
                passes.append((GenerationMode.POSITIVE, targets))
            for mode, aim in passes:
                try:
                    fuzz(operation, mode, aim)
                except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
                    failures.append(f"{operation.label} ({mode.value}{', real targets' if aim else ''}): {exc}")
    finally:
        targets.close()
    assert not failures, "\n\n".join(failures)
    log = module_service.log()
    assert "Traceback" not in log, log[-5000:]
    assert httpx.get(f"{module_service.base_url}/health", timeout=10).status_code == 200
