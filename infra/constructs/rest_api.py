"""The REST API: the routes of ``ragserve.routes.ROUTES`` (the table the local server
uses, so local and AWS routing cannot drift), each integrated with its function's
``live`` alias; a Lambda REQUEST authorizer on every keyed route with API key source
AUTHORIZER (the authorizer returns the key, usage plans meter it); request validation;
access logs, X-Ray and execution logs (the account's CloudWatch role comes from
``ApiGatewayAccount``); no binary media types; API Gateway's own errors in the
service's JSON error shape; an optional custom domain with TLS 1.2."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from ragserve.routes import Route

_PARAM = re.compile(r"\{(\w+)\}")

# API Gateway's own answers, in the shape the functions use (docs/ARCHITECTURE.md section 3).
GATEWAY_RESPONSES: tuple[tuple[apigw.ResponseType, str, str, str], ...] = (
    (apigw.ResponseType.UNAUTHORIZED, "401", "unauthorized", '"missing x-api-key header"'),
    (apigw.ResponseType.ACCESS_DENIED, "403", "forbidden",
     '"this API key may not call this route (unknown or revoked key, scope or collection)"'),
    (apigw.ResponseType.INVALID_API_KEY, "403", "forbidden", '"this API key is not in a usage plan of this stage"'),
    (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "not_found",
     '"no route for $context.httpMethod $context.resourcePath"'),
    (apigw.ResponseType.THROTTLED, "429", "rate_limited", '"rate limit exceeded for this API key"'),
    (apigw.ResponseType.QUOTA_EXCEEDED, "429", "quota_exceeded", '"quota exceeded for this API key"'),
    (apigw.ResponseType.REQUEST_TOO_LARGE, "413", "body_too_large", '"request body too large"'),
    (apigw.ResponseType.BAD_REQUEST_BODY, "400", "invalid_request", "$context.error.validationErrorString"),
    (apigw.ResponseType.BAD_REQUEST_PARAMETERS, "400", "invalid_request", "$context.error.validationErrorString"),
    (apigw.ResponseType.WAF_FILTERED, "403", "forbidden", '"request blocked by the web application firewall"'),
    (apigw.ResponseType.AUTHORIZER_FAILURE, "503", "not_ready", '"API keys cannot be checked right now; retry"'),
    (apigw.ResponseType.AUTHORIZER_CONFIGURATION_ERROR, "500", "internal_error", '"authorizer misconfigured"'),
    (apigw.ResponseType.INTEGRATION_TIMEOUT, "504", "timeout", '"the function did not answer in time"'),
    (apigw.ResponseType.DEFAULT_4_XX, None, "bad_request", "$context.error.messageString"),
    (apigw.ResponseType.DEFAULT_5_XX, None, "internal_error", "$context.error.messageString"),
)

ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "time": "$context.requestTime",
    "method": "$context.httpMethod",
    "resource": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "keyId": "$context.authorizer.key_id",
    "tier": "$context.authorizer.tier",
    "apiKeyId": "$context.identity.apiKeyId",
    "error": "$context.error.message",
    "wafStatus": "$context.waf.status",
    "xrayTraceId": "$context.xrayTraceId",
}


def error_template(code: str, message_expr: str) -> str:
    """``{"error": {"code", "message", "request_id"}}``; ``message_expr`` is a JSON
    string literal or a context variable that renders as one."""
    return '{"error":{"code":"' + code + '","message":' + message_expr + ',"request_id":"$context.requestId"}}'


@dataclass(frozen=True, slots=True)
class ServiceApiProps:
    name: str
    stage_name: str
    routes: Sequence[Route]
    integrations: Mapping[str, lambda_.IFunction]  # function name -> its live alias
    authorizer_function: lambda_.IFunction
    authorizer_cache: Duration = Duration.minutes(5)
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    throttle_rate: float = 1000.0  # stage default per method (usage plans throttle per key)
    throttle_burst: int = 2000
    domain_name: str | None = None
    certificate_arn: str | None = None


class ServiceApi(Construct):
    api: apigw.RestApi
    stage: apigw.Stage
    authorizer: apigw.RequestAuthorizer
    access_logs: logs.LogGroup
    methods: dict[tuple[str, str], apigw.Method]
    domain: apigw.DomainName | None

    def __init__(self, scope: Construct, construct_id: str, props: ServiceApiProps) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=props.log_retention,
                                         removal_policy=RemovalPolicy.DESTROY)
        self.api = apigw.RestApi(
            self, "Api",
            rest_api_name=props.name,
            description="ragserve: embeddings and semantic search",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            api_key_source_type=apigw.ApiKeySourceType.AUTHORIZER,
            # the account-level role API Gateway needs for execution logs is one setting per
            # account and region: ApiGatewayAccount (infra/constructs/api_gateway_account.py)
            # of the one stage that owns it, never each API's
            cloud_watch_role=False,
            # no binary media types: every body reaches the functions as UTF-8 text
            # (isBase64Encoded false); docs/ARCHITECTURE.md section 3.1
            binary_media_types=None,
            deploy_options=apigw.StageOptions(
                stage_name=props.stage_name,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # never log request bodies (they hold user text and keys)
                throttling_rate_limit=props.throttle_rate,
                throttling_burst_limit=props.throttle_burst,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
            ),
        )
        self.stage = self.api.deployment_stage
        self.authorizer = apigw.RequestAuthorizer(
            self, "Authorizer", handler=props.authorizer_function,
            identity_sources=[apigw.IdentitySource.header("x-api-key")],
            results_cache_ttl=props.authorizer_cache,
            authorizer_name=f"{props.name}-api-key",
        )
        for response_type, status, code, message in GATEWAY_RESPONSES:
            headers = {"Content-Type": "'application/json'"}
            if response_type.response_type == "THROTTLED":
                headers["Retry-After"] = "'1'"
            self.api.add_gateway_response(
                f"Gateway{response_type.response_type}", type=response_type, status_code=status,
                response_headers=headers, templates={"application/json": error_template(code, message)},
            )
        validator = self.api.add_request_validator("Validator", request_validator_name="body-and-parameters",
                                                   validate_request_body=True, validate_request_parameters=True)
        json_object = self.api.add_model(
            "JsonObject", content_type="application/json", model_name="JsonObject",
            description="Any JSON object (the functions validate fields)",
            schema=apigw.JsonSchema(schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT),
        )
        self.methods = {}
        for route in props.routes:
            resource = self.api.root.resource_for_path(route.resource)
            keyed = route.scope is not None
            self.methods[(route.method, route.resource)] = resource.add_method(
                route.method,
                apigw.LambdaIntegration(props.integrations[route.function], proxy=True, allow_test_invoke=False),
                authorizer=self.authorizer if keyed else None,
                authorization_type=apigw.AuthorizationType.CUSTOM if keyed else apigw.AuthorizationType.NONE,
                api_key_required=keyed,
                operation_name=route.operation,
                request_validator=validator,
                request_parameters={f"method.request.path.{p}": True for p in _PARAM.findall(route.resource)},
                request_models={"application/json": json_object} if route.method in ("POST", "PUT") else None,
            )
        self.domain = None
        if props.domain_name and props.certificate_arn:
            self.domain = self.api.add_domain_name(
                "Domain", domain_name=props.domain_name,
                certificate=acm.Certificate.from_certificate_arn(self, "Certificate", props.certificate_arn),
                security_policy=apigw.SecurityPolicy.TLS_1_2, endpoint_type=apigw.EndpointType.REGIONAL,
            )

    @property
    def url(self) -> str:
        return self.api.url
