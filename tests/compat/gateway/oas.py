"""Builders for OpenAPI 2.0 + x-google-* documents, and a small block-YAML writer.

Documents are plain dicts. The gateway must accept them as YAML and as JSON, so the launcher
writes block YAML by default (to_yaml below, every string double-quoted with JSON escapes,
which YAML reads identically) and JSON when a test asks for it.
"""

import json
import re

HOST = "gw.example.test"  # service name (`host`) of every generated document

_VAR = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


class AsJson(dict):
    """Marks a document to be written as JSON text even into a .yaml file."""
    _as_json = True


def path_params(template):
    """Names of the variables of a path template: /a/{x}/b/{y=c/**} -> ["x", "y"]."""
    return _VAR.findall(template)


def backend(address, **fields):
    """An x-google-backend object: backend("http://127.0.0.1:1/p", path_translation=..., ...)."""
    d = {"address": address}
    d.update(fields)
    return d


def oauth2(issuer, jwks_uri=None, audiences=None, locations=None):
    """A securityDefinitions entry of type oauth2 with the x-google-* JWT fields."""
    d = {
        "authorizationUrl": "",
        "flow": "implicit",
        "type": "oauth2",
        "x-google-issuer": issuer,
    }
    if jwks_uri is not None:
        d["x-google-jwks_uri"] = jwks_uri
    if audiences is not None:
        d["x-google-audiences"] = audiences
    if locations is not None:
        d["x-google-jwt-locations"] = locations
    return d


def api_key(name="key", location="query"):
    return {"type": "apiKey", "name": name, "in": location}


def op(operation_id, backend=None, security=None, **extra):
    """One operation. security=None leaves it out (inherit top level); [] opens the operation."""
    d = {"operationId": operation_id, "responses": {"200": {"description": "OK"}}}
    if security is not None:
        d["security"] = security
    if backend is not None:
        d["x-google-backend"] = backend
    d.update(extra)
    return d


def document(paths, security_definitions=None, security=None, backend=None, host=HOST,
             allow_cors=None, endpoints_name=None, allow=None, title="conformance", **extra):
    """A complete Swagger 2.0 document. Path parameters are declared for every template variable
    (API Gateway rejects undeclared ones), unless the operation already lists parameters."""
    doc = {
        "swagger": "2.0",
        "info": {"title": title, "description": "Gatehouse gateway conformance", "version": "1.0.0"},
        "host": host,
        "basePath": "/",
        "schemes": ["https"],
        "produces": ["application/json"],
    }
    if allow_cors is not None:
        doc["x-google-endpoints"] = [{"name": endpoints_name or host, "allowCors": allow_cors}]
    if allow is not None:
        doc["x-google-allow"] = allow
    if backend is not None:
        doc["x-google-backend"] = backend
    if security is not None:
        doc["security"] = security
    out_paths = {}
    for template, methods in paths.items():
        out_methods = {}
        for method, operation in methods.items():
            operation = dict(operation)
            names = path_params(template)
            if names and "parameters" not in operation:
                operation["parameters"] = [
                    {"name": n, "in": "path", "required": True, "type": "string"} for n in names]
            out_methods[method] = operation
        out_paths[template] = out_methods
    doc["paths"] = out_paths
    if security_definitions:
        doc["securityDefinitions"] = security_definitions
    doc.update(extra)
    return doc


# --------------------------------------------------------------------------- YAML writer

def _scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(str(v))


def _emit(obj, indent, lines):
    pad = " " * indent
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = json.dumps(str(k))
            if isinstance(v, dict) and v:
                lines.append(f"{pad}{key}:")
                _emit(v, indent + 2, lines)
            elif isinstance(v, list) and v:
                lines.append(f"{pad}{key}:")
                _emit(v, indent + 2, lines)
            elif isinstance(v, (dict, list)):
                lines.append(f"{pad}{key}: {'{}' if isinstance(v, dict) else '[]'}")
            else:
                lines.append(f"{pad}{key}: {_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = []
                _emit(item, indent + 2, sub)
                first = sub[0][indent + 2:]
                lines.append(f"{pad}- {first}")
                lines.extend(sub[1:])
            elif isinstance(item, (dict, list)):
                lines.append(f"{pad}- {'{}' if isinstance(item, dict) else '[]'}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(obj))


def to_yaml(obj, comment=None):
    """Block-style YAML for dicts/lists/scalars; strings double-quoted (JSON escapes)."""
    lines = []
    if comment:
        lines.append(f"# {comment}")
    _emit(obj, 0, lines)
    return "\n".join(lines) + "\n"
