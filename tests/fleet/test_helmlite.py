"""The small Go-template renderer renders what Helm would for the constructs it supports."""

from __future__ import annotations

import pytest

from tests.fleet.helmlite import TemplateError, render_template

CTX = {"Values": {"name": "x", "n": 3, "on": True, "off": False, "empty": "",
                  "groups": {"b": {"slots": 2}, "a": {"slots": 1}}, "items": ["p", "q"],
                  "res": {"limits": {"cpu": "1"}}},
       "Release": {"Name": "rel"}}


@pytest.mark.parametrize(("source", "expected"), [
    ("a {{ .Values.name }} b", "a x b"),
    ("a  {{- .Values.name -}}  b", "axb"),
    ("{{ .Values.name | quote }}", '"x"'),
    ('{{ .Values.empty | default "d" }}', "d"),
    ('{{ .Values.name | default "d" }}', "x"),
    ("{{ add .Values.n 30 }}", "33"),
    ("{{ max 5 .Values.n 9 }}", "9"),
    ("{{ if .Values.on }}yes{{ else }}no{{ end }}", "yes"),
    ("{{ if .Values.off }}yes{{ else }}no{{ end }}", "no"),
    ("{{ range $k, $g := .Values.groups }}{{ $k }}={{ $g.slots }};{{ end }}", "a=1;b=2;"),
    ("{{ range $i, $v := .Values.items }}{{ $i }}{{ $v }}{{ end }}", "0p1q"),
    ("{{ range $k, $g := .Values.groups }}{{ $.Release.Name }}-{{ $k }} {{ end }}", "rel-a rel-b "),
    ("x:{{ toYaml .Values.res | nindent 2 }}", "x:\n  limits:\n    cpu: '1'"),
    ('{{ printf "%s-%s" .Release.Name "w" }}', "rel-w"),
    ("{{ $x := .Values.n }}{{ $x }}", "3"),
    ("{{/* a comment */}}ok", "ok"),
])
def test_renders_like_go_templates(source: str, expected: str) -> None:
    assert render_template(source, CTX) == expected


@pytest.mark.parametrize("source", ["{{ include \"x\" . }}", "{{ if .Values.on }}open", "{{ end }}",
                                    '{{ required "name the secret" .Values.empty }}', "{{ $nope }}"])
def test_refuses_what_it_cannot_render(source: str) -> None:
    with pytest.raises(TemplateError):
        render_template(source, CTX)
