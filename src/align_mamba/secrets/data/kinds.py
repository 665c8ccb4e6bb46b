"""The carrier kinds: file names, headers, filler blocks and assignment syntax of each.

Filler blocks end where another block (or a planted assignment) may start, so code stays
syntactically plausible: Python and Go at top level, JSON as members of one object (every member
ends with ",\\n" and the footer closes the object), minified JS as statements on one line.

For the hard cases (`hard`), source kinds also say how they concatenate two string literals
(`concat`), and every kind but .env and INI how it writes one long minified line (`inline`).
"""

from __future__ import annotations

from align_mamba.secrets.data.carrier import (Carrier, Concat, Inline, JsonCarrier, LogCarrier, MarkdownCarrier,
                                              MinifiedCarrier)

# Statements of minified JavaScript, without their ';' (Inline joins them).
_JS_ITEMS = ("var {short}={num}", '{short}.{camel}="{word}"', "var {short}=function(e,t){{return e.{camel}(t)}}",
             "for(var i=0;i<{num};i++){short}.push(i)", 'var {short}={{{camel}:{num},{camel}:"{word}",{camel}:!0}}')

PYTHON = Carrier(
    kind="python",
    file_names=("settings.py", "config.py", "app.py", "utils.py", "manage.py", "tasks.py", "db.py", "conftest.py"),
    headers=('"""{sentence}"""\n\nimport logging\nimport os\n\n', "import os\n\n", "",
             "from __future__ import annotations\n\nimport json\n\n"),
    blocks=(
        'def {ident}({ident}, options=None):\n    """{sentence}"""\n    if options is None:\n'
        "        return {num}\n    return {ident}.{ident}(options)\n\n\n",
        "class {pascal}:\n    {ident} = {num}\n\n    def __init__(self, {ident}):\n"
        "        self.{ident} = {ident}\n\n\n",
        "{upper} = {num}\n", '{upper} = "{word}"\n', "# {sentence}\n", 'logger = logging.getLogger("{word}.{word}")\n',
        '{upper} = ["{word}", "{word}", "{word}"]\n', '{upper} = os.environ.get("{upper}", "{word}")\n', "\n",
    ),
    assign=("{name} = {literal}\n", 'os.environ.setdefault("{name}", {literal})\n'),
    name_styles=("upper", "snake"),
    quotes=('"', "'"),
    multiline=('"""', '"""'),
    concat=(Concat("", " + ", ""), Concat("(", " +\n    ", ")")),
    inline=Inline("", ("{ident}={num}", '{ident}="{word}"', "{ident}=[{num}, {num}]", "{ident}={{'{word}': {num}}}"),
                  ";", "{name}={literal}", "\n"),
)

JAVASCRIPT = Carrier(
    kind="javascript",
    file_names=("index.js", "server.js", "config.js", "webpack.config.js", "api.js", "app.js", "db.js"),
    headers=('"use strict";\n\n', "", "const path = require('path');\n\n",
             "import {{ {camel} }} from './{word}.js';\n\n"),
    blocks=(
        "function {camel}({camel}, options) {{\n  if (!options) {{\n    return {num};\n  }}\n"
        "  return {camel}.{camel}(options);\n}}\n\n",
        "const {camel} = require('{word}');\n",
        "const {camel} = {{ {camel}: {num}, {camel}: '{word}', {camel}: {bool} }};\n",
        "// {sentence}\n", "app.get('/{word}/:{camel}', async (req, res) => {{\n"
        "  res.status({status}).json({{ {camel}: req.params.{camel} }});\n}});\n\n",
        "module.exports.{camel} = {camel};\n", "\n",
    ),
    assign=("const {name} = {literal};\n", "let {name} = {literal};\n", "module.exports.{name} = {literal};\n"),
    name_styles=("camel", "upper"),
    quotes=('"', "'", "`"),
    multiline=("`", "`"),
    comment="// ",
    concat=(Concat("", " + ", ""), Concat("", " +\n  ", "")),
    inline=Inline("", _JS_ITEMS, ";", "var {name}={literal}", ";\n"),
)

GO = Carrier(
    kind="go",
    file_names=("main.go", "config.go", "server.go", "client.go", "handlers.go"),
    headers=('package main\n\nimport (\n\t"fmt"\n\t"os"\n)\n\n', "package {word}\n\n"),
    blocks=(
        'func {pascal}({camel} string) error {{\n\tif {camel} == "" {{\n\t\treturn fmt.Errorf("{words}")\n\t}}\n'
        "\treturn nil\n}}\n\n",
        "// {pascal} {sentence}\n", "type {pascal} struct {{\n\tName string\n\t{pascal}Count int\n}}\n\n",
        "const {camel} = {num}\n", 'var {camel} = "{word}"\n', "\n",
    ),
    assign=("const {name} = {literal}\n", "var {name} = {literal}\n"),
    name_styles=("camel",),
    quotes=('"', "`"),
    multiline=("`", "`"),
    comment="// ",
    concat=(Concat("", " + ", ""), Concat("", " +\n\t", "")),
    inline=Inline("", ("const {camel} = {num}", 'var {camel} = "{word}"'), "; ", "var {name} = {literal}", "\n"),
)

MINIFIED_JS = MinifiedCarrier(
    kind="minified_js",
    file_names=("app.min.js", "bundle.min.js", "vendor.min.js", "main.min.js", "chunk-vendors.min.js"),
    headers=('/*! {word} v{version} | MIT */!function(){{"use strict";', '!function(){{"use strict";'),
    footers=("}}();\n",),
    blocks=(
        "var {short}=function(e,t){{return e.{camel}(t)}};",
        "function {short}({short}){{if(!{short})return {num};return {short}.{camel}}}",
        '{short}.{camel}="{word}";', 'var {short}={{{camel}:{num},{camel}:"{word}",{camel}:!0}};',
        "{short}.prototype.{camel}=function(){{return this.{camel}}};",
        "for(var i=0;i<{num};i++){short}.push(i);",
    ),
    assign=("var {name}={literal};", "{short}.{name}={literal};"),
    name_styles=("camel",),
    quotes=('"', "'"),
    comment="",
    concat=(Concat("", "+", ""),),
    inline=Inline("", _JS_ITEMS, ";", "var {name}={literal}", ";"),
)

YAML = Carrier(
    kind="yaml",
    file_names=("docker-compose.yml", "config.yaml", "values.yaml", ".gitlab-ci.yml", "deployment.yaml",
                "application.yml"),
    headers=("---\n", "", "# {sentence}\n", 'version: "3.{num}"\n'),
    blocks=(
        "{ident}:\n  {ident}: {word}\n  {ident}: {num}\n", "{ident}: {word}\n", "{ident}: {bool}\n", "# {sentence}\n",
        "{ident}:\n  - {word}\n  - {word}\n", '{ident}:\n  image: {word}:{version}\n  ports:\n    - "{port}:{port}"\n'
        "  restart: always\n", '{ident}: "{url}"\n',
    ),
    assign=("{name}: {literal}\n", "{ident}:\n  {name}: {literal}\n"),
    name_styles=("snake", "camel"),
    quotes=('"', "'", ""),
    inline=Inline("{ident}: {{", ("{camel}: {num}", '{camel}: "{word}"', "{camel}: {bool}"), ", ", "{name}: {literal}",
                  "}}\n"),
)

JSON = JsonCarrier(
    kind="json",
    file_names=("package.json", "config.json", "appsettings.json", "settings.json", "firebase.json", "secrets.json"),
    headers=("{{\n",),
    footers=('  "version": "{version}"\n}}\n',),
    blocks=(
        '  "{ident}": "{words}",\n', '  "{camel}": {num},\n', '  "{ident}": {bool},\n',
        '  "{camel}": {{\n    "{ident}": "{word}",\n    "{ident}": {num}\n  }},\n',
        '  "{ident}": ["{word}", "{word}", "{word}"],\n', '  "{ident}": "{url}",\n',
    ),
    assign=('  "{name}": {literal},\n',),
    name_styles=("snake", "camel"),
    inline=Inline('  "{camel}": {{', ('"{camel}":{num}', '"{camel}":"{word}"', '"{camel}":{bool}'), ",",
                  '"{name}":{literal}', "}},\n"),
)

ENV = Carrier(
    kind="env",
    file_names=(".env", ".env.production", ".env.local", ".env.staging", ".env.development"),
    headers=("# {sentence}\n", ""),
    blocks=("{upper}={word}\n", "{upper}={num}\n", "{upper}={bool}\n", "# {sentence}\n", "{upper}={url}\n",
            "{upper}={host}\n", "\n"),
    assign=("{name}={literal}\n", "export {name}={literal}\n"),
    name_styles=("upper",),
    quotes=("", '"', "'"),
    multiline=('"', '"'),
)

INI = Carrier(
    kind="ini",
    file_names=("config.ini", "setup.cfg", "settings.ini", "app.conf", "my.cnf", "tox.ini"),
    headers=("[{ident}]\n",),
    blocks=("[{ident}]\n", "{ident} = {word}\n", "{ident} = {num}\n", "; {sentence}\n", "{ident} = {path}\n",
            "{ident} = {bool}\n", "\n"),
    assign=("{name} = {literal}\n", "[{ident}]\n{name} = {literal}\n"),
    name_styles=("snake",),
    quotes=("",),
    bare_any=True,
    comment="; ",
)

SHELL = Carrier(
    kind="shell",
    file_names=("deploy.sh", "setup.sh", "entrypoint.sh", "backup.sh", "install.sh", "run.sh"),
    headers=("#!/usr/bin/env bash\nset -euo pipefail\n\n", "#!/bin/sh\n"),
    blocks=(
        'echo "{sentence}"\n', '{upper}="{word}"\n', "# {sentence}\n",
        'if [ -z "${upper}" ]; then\n  echo "{words}" >&2\n  exit 1\nfi\n',
        "mkdir -p {path}\n", "cp -r {path} {path}\n",
        '{ident}() {{\n  local {ident}="$1"\n  echo "{words} ${ident}"\n}}\n\n', "docker compose up -d {word}\n", "\n",
    ),
    assign=("export {name}={literal}\n", "{name}={literal}\n", "readonly {name}={literal}\n"),
    name_styles=("upper",),
    quotes=('"', "'"),
    multiline=('"', '"'),
    inline=Inline("", ("{upper}={num}", '{upper}="{word}"', "cd {path}"), "; ", "export {name}={literal}", "\n"),
)

LOG = LogCarrier(
    kind="log",
    file_names=("server.log", "app.log", "error.log", "worker.log", "deploy.log"),
    blocks=(
        "{ts} {level} [{word}-{num}] {method} {path} {status} {ms}ms\n", "{ts} {level} [{word}] {sentence}\n",
        "{ts} {level} [{word}] {word} {ident}={num} {ident}={word}\n",
        "{ts} WARN [{word}] retrying {word} in {ms}ms (attempt {num})\n",
    ),
    assign=("{ts} {level} [{word}] {words} {name}={literal}\n",
            "{ts} DEBUG [{word}] loaded {name}={literal} from {path}\n"),
    name_styles=("snake",),
    quotes=("",),
    bare_any=True,
    inline=Inline("{ts} DEBUG [{word}] state ", ("{camel}={num}", "{camel}={word}", "{ident}={path}"), " ",
                  "{name}={literal}", "\n"),
)

MARKDOWN = MarkdownCarrier(
    kind="markdown",
    file_names=("README.md", "SETUP.md", "CONTRIBUTING.md", "deployment.md", "CHANGELOG.md"),
    headers=("# {title}\n\n{sentence}\n\n", "# {title}\n\n"),
    blocks=(
        "## {title}\n\n", "{sentence} {sentence}\n\n", "- {sentence}\n- {sentence}\n\n",
        "```bash\n{word} {word} --{word} {path}\n```\n\n", "| {word} | {word} |\n|---|---|\n| {num} | {word} |\n\n",
        "See [{title}]({url}) for {words}.\n\n",
    ),
    assign=("```bash\nexport {name}={literal}\n```\n\n", "```yaml\n{name}: {literal}\n```\n\n",
            "```\n{name}={literal}\n```\n\n"),
    name_styles=("upper",),
    quotes=('"', "'"),
    comment="",
    inline=Inline("```js\n", _JS_ITEMS, ";", "var {name}={literal}", ";\n```\n\n"),
)

CARRIERS: dict[str, Carrier] = {c.kind: c for c in (PYTHON, JAVASCRIPT, GO, YAML, JSON, ENV, INI, SHELL, LOG,
                                                     MARKDOWN, MINIFIED_JS)}
CARRIER_KINDS: tuple[str, ...] = tuple(CARRIERS)
