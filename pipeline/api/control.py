"""The rules and captures HTTP API (bearer token, 127.0.0.1 by default), which also serves the support
page: GET/PUT/DELETE /rules/{id}, GET /rules, POST /rules:validate, POST /captures, /lines, /incidents.
Nothing reaches the rules topic unless it validated; a bad field is a 400 naming its path."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from pipeline.api.base import Api, ApiError, Call, Endpoint, Limits, Ok, Server, Tokens, json_response
from pipeline.api.support import support_endpoints
from pipeline.control import captures
from pipeline.control.rules import check_rule
from pipeline.errors import ConfigError, HindsightError
from pipeline.rules.model import Rule, RuleError
from pipeline.rules.store import RuleReader, RuleStore
from pipeline.settings import Settings
from pipeline.store.query import parse_duration

_CAPTURE_MAX_S = {"lookback": 30 * 86400, "follow": 7 * 86400}  # beyond any raw retention / a rule's follow
RULE_ID: dict[str, Any] = {"type": "string", "pattern": r"^[A-Za-z0-9_.:@-]{1,128}$"}
CAPTURE_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["user_id"],
    "additionalProperties": False,
    "properties": {
        "user_id": {"type": "string", "minLength": 1},
        "lookback": {
            "type": "string",
            "default": "30m",
            "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$",
            "description": "At most 30 days.",
        },
        "follow": {
            "type": "string",
            "default": "15m",
            "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$",
            "description": "At most 7 days.",
        },
        "reason": {"type": "string"},
    },
}


class RulesView:
    """The rules in force as this process last read them from the rules topic, and the writer."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.rules: dict[str, Rule] = {}
        self.lock = threading.Lock()

    def replace(self, rules: dict[str, Rule]) -> None:
        with self.lock:
            self.rules = rules


def _answers(handler: Callable[[Call], Response]) -> Callable[[Call], Response]:
    """A rule problem is the client's (400); a service behind this one failing is ours (503)."""

    def wrapped(call: Call) -> Response:
        try:
            return handler(call)
        except RuleError as exc:
            raise ApiError(400, exc.problems) from None
        except HindsightError as exc:
            raise ApiError(503, [("(server)", str(exc))]) from None

    return wrapped


def control_api(settings: Settings, view: RulesView) -> Api:
    """The API's endpoints over a rules view (the server keeps it following the rules topic)."""

    def list_rules(call: Call) -> Response:
        with view.lock:
            rules = sorted(view.rules.values(), key=lambda r: (-r.priority, r.id))
        return json_response([r.model_dump(mode="json") for r in rules])

    def get_rule(call: Call) -> Response:
        rule_id = call.path["id"]
        with view.lock:
            rule = view.rules.get(rule_id)
        if rule is None:
            raise ApiError(404, [("id", f"no rule {rule_id}")])
        return json_response(rule.model_dump(mode="json"))

    def put_rule(call: Call) -> Response:
        rule_id = call.path["id"]
        data = call.json()
        if isinstance(data, dict):
            data.setdefault("id", rule_id)
            if data["id"] != rule_id:
                raise RuleError([("id", f"differs from the URL's id {rule_id!r}")])
        rule = check_rule(settings, data)
        view.store.put(rule)
        with view.lock:
            view.rules[rule.id] = rule
        return json_response(rule.model_dump(mode="json"))

    def delete_rule(call: Call) -> Response:
        rule_id = call.path["id"]
        with view.lock:
            known = rule_id in view.rules
        if not known:
            raise ApiError(404, [("id", f"no rule {rule_id}")])
        view.store.delete(rule_id)
        with view.lock:
            view.rules.pop(rule_id, None)
        return Response(status_code=204)

    def validate(call: Call) -> Response:
        rule = check_rule(settings, call.json())
        return json_response({"valid": True, "rule": rule.model_dump(mode="json")})

    def capture(call: Call) -> Response:
        data = call.json()
        if not isinstance(data, dict):
            raise RuleError([("(body)", "expected a JSON object")])
        problems = []
        user = data.get("user_id")
        if not isinstance(user, str) or not user:
            problems.append(("user_id", "required, a non-empty string"))
        spans = {}
        for name, default in (("lookback", "30m"), ("follow", "15m")):
            value = data.get(name, default)
            try:
                if not isinstance(value, str):
                    raise RuleError([(name, f"must be a string such as {default!r}")])
                spans[name] = parse_duration(value)
                if spans[name] > _CAPTURE_MAX_S[name]:
                    raise RuleError([(name, f"at most {_CAPTURE_MAX_S[name] // 86400} days")])
            except RuleError as exc:
                problems.extend(exc.problems)
            except HindsightError as exc:
                problems.append((name, str(exc)))
        reason = data.get("reason", "")
        if not isinstance(reason, str):
            problems.append(("reason", "must be a string"))
        problems.extend(
            (k, "unknown field") for k in sorted(set(data) - {"user_id", "lookback", "follow", "reason"})
        )
        if problems:
            raise RuleError(problems)
        result = captures.start_capture(settings, str(user), spans["lookback"], spans["follow"], str(reason))
        return json_response(result, 201)

    rule = {"$ref": "#/components/schemas/Rule"}
    one_rule = Ok(200, "The rule", schema=rule)
    by_id = {"id": RULE_ID}
    endpoints = [
        Endpoint(
            "GET",
            "/rules",
            list_rules,
            "Rules in force",
            Ok(200, "Rules", schema={"type": "array", "items": rule}),
            errors=(),
        ),
        Endpoint("GET", "/rules/{id:any}", get_rule, "One rule", one_rule, errors=(404,), path_params=by_id),
        Endpoint(
            "PUT",
            "/rules/{id:any}",
            _answers(put_rule),
            "Create or replace a rule (the body's id, when given, must be the URL's)",
            one_rule,
            body={"$ref": "#/components/schemas/RuleAtId"},
            path_params=by_id,
        ),
        Endpoint(
            "DELETE",
            "/rules/{id:any}",
            delete_rule,
            "Delete a rule (tombstone)",
            Ok(204, "Deleted", schema=None),
            errors=(404,),
            path_params=by_id,
        ),
        Endpoint(
            "POST",
            "/rules:validate",
            _answers(validate),
            "Validate without storing",
            Ok(200, "Valid", schema={"type": "object"}),
            body=rule,
        ),
        Endpoint(
            "POST",
            "/captures",
            _answers(capture),
            "Support capture: history dump plus follow",
            Ok(201, "Capture started", schema={"type": "object"}),
            body={"$ref": "#/components/schemas/CaptureRequest"},
        ),
        *support_endpoints(settings),
    ]
    schema = Rule.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = dict(schema.pop("$defs", {}))
    components["Rule"] = schema
    # PUT /rules/{id} takes the id from the URL: in its body the id may be left out
    components["RuleAtId"] = {**schema, "required": [f for f in schema.get("required", []) if f != "id"]}
    components["CaptureRequest"] = CAPTURE_REQUEST
    return Api(
        "log-hindsight rules and captures", endpoints, Tokens.from_settings(settings), components=components
    )


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API (the rule schema comes from the pydantic model)."""
    return control_api(Settings(), RulesView(None)).openapi()


class ControlServer(Server):
    """Serves the API in a thread; keeps a live view of the rules topic for reads."""

    def __init__(self, settings: Settings) -> None:
        if settings.api_token is None or not settings.api_token.get_secret_value():
            raise ConfigError("the rules API needs a token: set HINDSIGHT_API_TOKEN")
        self.settings = settings
        self.view = RulesView(RuleStore(settings))
        self.reader = RuleReader(settings, self.view.replace)
        super().__init__(
            "rules API",
            control_api(settings, self.view).app(),
            settings.api_host,
            settings.api_port,
            "HINDSIGHT_API_PORT",
            Limits.from_settings(settings),
        )

    @property
    def rules(self) -> dict[str, Rule]:
        return self.view.rules

    def start(self) -> ControlServer:
        self.reader.start()
        self.reader.ready.wait(30)
        return super().start()

    def stop(self) -> None:
        self.reader.stop()
        super().stop()
