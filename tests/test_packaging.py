"""Packaging files stay honest: requirements.txt, environment.yml, Dockerfile,
.dockerignore, .ci/run and the commands and options that README.md documents."""

import ast
import glob
import importlib.util
import os
import re
import shlex
import sys

import click
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# Entries of environment.yml that requirements.txt deliberately lacks: the
# interpreter, pip, and the compilers for the just-in-time custom ops, of the
# CUDA version torch was built with (see the comment in environment.yml).
CONDA_ONLY = {'python', 'pip', 'cxx-compiler', 'cuda-version', 'cuda-nvcc', 'cuda-cudart-dev'}

# Scripts that README may mention before they land (written by someone else
# now): checked as soon as the file exists, skipped while it does not.
PENDING_SCRIPTS = {'gen_video.py'}

PYTHONS = ('python', 'python3')

# Options of other tools (docker run, pip) that README's prose names on their own.
EXTERNAL_OPTIONS = {'--shm-size', '--ipc', '--user', '--no-deps', '--build-arg', '--network'}

#----------------------------------------------------------------------------
# Reading the files.

def read(name):
    with open(os.path.join(REPO, name), encoding='utf-8') as f:
        return f.read()

def normalize(name):
    """PEP 503 name normalization (also used for conda names)."""
    return re.sub(r'[-_.]+', '-', name).lower()

_REQ = re.compile(r'^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;#]*)')

def parse_requirement(line):
    """(normalized name, specifier without spaces) of a requirement line, or None."""
    line = line.split(' #', 1)[0].strip()
    if not line or line.startswith(('#', '-')):
        return None
    m = _REQ.match(line)
    assert m, f'unparsable requirement: {line!r}'
    return normalize(m.group(1)), re.sub(r'\s+', '', m.group(3))

def requirements():
    """{normalized name: specifier} of requirements.txt."""
    reqs = {}
    for line in read('requirements.txt').splitlines():
        req = parse_requirement(line)
        if req is not None:
            assert req[0] not in reqs, f'{req[0]} listed twice in requirements.txt'
            reqs[req[0]] = req[1]
    return reqs

def parse_environment(text):
    """The subset of YAML that environment.yml uses (top-level keys; lists;
    one nested '- pip:' list), without needing PyYAML.
    Returns {key: value or list}; a dict item {'pip': [...]} inside dependencies."""
    env = {}
    key = None
    pip_list = None
    pip_indent = None
    for raw in text.splitlines():
        line = raw.split(' #', 1)[0].rstrip() if not raw.lstrip().startswith('#') else ''
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if indent == 0:
            pip_list = None
            k, _, v = stripped.partition(':')
            key = k.strip()
            env[key] = v.strip() if v.strip() else []
            continue
        assert stripped.startswith('- '), f'unexpected line in environment.yml: {raw!r}'
        item = stripped[2:].strip()
        if pip_list is not None and indent > pip_indent:
            pip_list.append(item)
            continue
        pip_list = None
        if item.endswith(':'):
            pip_list = []
            pip_indent = indent
            env[key].append({item[:-1].strip(): pip_list})
        else:
            env[key].append(item)
    return env

def environment():
    return parse_environment(read('environment.yml'))

_CONDA = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$')

def environment_packages():
    """({normalized conda name: spec}, {normalized pip name: specifier})."""
    conda, pip = {}, {}
    for item in environment()['dependencies']:
        if isinstance(item, dict):
            for line in item['pip']:
                req = parse_requirement(line)
                if req is not None:
                    assert req[0] not in pip, f'{req[0]} listed twice in environment.yml'
                    pip[req[0]] = req[1]
        else:
            m = _CONDA.match(item)
            assert m, f'unparsable conda entry: {item!r}'
            assert normalize(m.group(1)) not in conda, f'{item} listed twice in environment.yml'
            conda[normalize(m.group(1))] = m.group(2).strip()
    return conda, pip

def dockerfile_instructions():
    """[(INSTRUCTION, arguments)] of the Dockerfile, continuation lines joined."""
    text = re.sub(r'\\\n', ' ', '\n'.join(line for line in read('Dockerfile').splitlines()
        if not line.lstrip().startswith('#')))
    out = []
    for line in text.splitlines():
        if line.strip():
            instr, _, args = line.strip().partition(' ')
            out.append((instr.upper(), args.strip()))
    return out

def dockerfile_env():
    """Variables set by ENV (KEY=value form)."""
    env = {}
    for instr, args in dockerfile_instructions():
        if instr == 'ENV':
            for token in shlex.split(args):
                k, sep, v = token.partition('=')
                assert sep, f'use ENV KEY=value in the Dockerfile: {args!r}'
                env[k] = v
    return env

def base_image():
    args = {}
    for instr, rest in dockerfile_instructions():
        if instr == 'ARG':
            k, _, v = rest.partition('=')
            args[k.strip()] = v.strip()
        if instr == 'FROM':
            return re.sub(r'\$\{?(\w+)\}?', lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
    raise AssertionError('no FROM in the Dockerfile')

#----------------------------------------------------------------------------
# requirements.txt <-> environment.yml

def test_requirements_parse():
    reqs = requirements()
    assert 'torch' in reqs and reqs['torch'].startswith('=='), 'torch must stay pinned'
    for name in ['numpy', 'click', 'ninja', 'imageio-ffmpeg', 'safetensors', 'pytest']:
        assert name in reqs

def test_environment_parser_agrees_with_yaml():
    yaml = pytest.importorskip('yaml')
    assert parse_environment(read('environment.yml')) == yaml.safe_load(read('environment.yml'))

def test_environment_matches_requirements():
    reqs = requirements()
    conda, pip = environment_packages()
    declared = {**{k: v for k, v in conda.items() if k not in CONDA_ONLY}, **pip}
    missing = sorted(set(reqs) - set(declared))
    extra = sorted(set(declared) - set(reqs))
    assert not missing, f'in requirements.txt but not in environment.yml: {missing}'
    assert not extra, f'in environment.yml but not in requirements.txt (add to CONDA_ONLY if deliberate): {extra}'
    both = sorted(set(conda) & set(pip))
    assert not both, f'both conda and pip install {both}'
    for name, spec in pip.items():
        assert spec == reqs[name], f'{name}: {spec!r} in environment.yml, {reqs[name]!r} in requirements.txt'
    for name, spec in conda.items():
        if name in reqs:
            assert spec.lstrip('=') == reqs[name].lstrip('='), f'{name}: {spec!r} vs {reqs[name]!r}'

def test_environment_python_and_cuda():
    env = environment()
    assert env['name']
    conda, _ = environment_packages()
    python = conda['python'].lstrip('=')
    assert re.fullmatch(r'3\.\d+', python), python
    m = re.search(r'Python (3\.\d+)', read('README.md').split('```')[0])
    assert m and m.group(1) == python, 'README setup line and environment.yml name different Pythons'
    # The CUDA compiler must be of torch's CUDA version: the Dockerfile's base image tells which.
    cuda = re.search(r'-cuda(\d+\.\d+)-', base_image())
    assert cuda and conda['cuda-version'].lstrip('=') == cuda.group(1), (conda['cuda-version'], base_image())
    for name in CONDA_ONLY - {'python', 'pip'}:
        assert name in conda, f'{name} documented as conda-only but absent from environment.yml'

#----------------------------------------------------------------------------
# Dockerfile and .dockerignore

def test_dockerfile_base_image():
    image = base_image()
    assert image.startswith('pytorch/pytorch:'), image
    assert image.endswith('-devel'), f'{image}: the custom ops need nvcc (a devel image)'
    version = re.match(r'pytorch/pytorch:(\d+\.\d+\.\d+)-', image).group(1)
    assert requirements()['torch'] == f'=={version}', 'base image torch differs from requirements.txt'

def test_dockerfile_installs_requirements_without_torch():
    instructions = dockerfile_instructions()
    copies = [args for instr, args in instructions if instr == 'COPY']
    assert any('requirements.txt' in args.split()[:-1] for args in copies), copies
    runs = ' '.join(args for instr, args in instructions if instr == 'RUN')
    assert re.search(r'pip install -r \S*requirements', runs), 'the Dockerfile must install requirements.txt'
    # The filter that keeps pip from replacing the base image's CUDA torch, applied
    # to requirements.txt: everything but torch survives it.
    m = re.search(r"grep -v -i -E '([^']+)' requirements\.txt > (\S+)", runs)
    assert m, 'the torch line of requirements.txt must be filtered out'
    pattern = re.compile(m.group(1).replace('[[:space:]]', r'\s'), re.IGNORECASE)
    assert f'pip install -r {m.group(2)}' in runs
    kept = [line for line in read('requirements.txt').splitlines() if not pattern.search(line)]
    kept = {parse_requirement(line)[0] for line in kept if parse_requirement(line)}
    assert kept == set(requirements()) - {'torch'}
    assert not pattern.search('torchvision') and pattern.search('torch==2.13.0') and pattern.search('torch')
    assert re.search(r'-c \S*constraints', runs), 'the installed torch must constrain pip'

def test_dockerfile_environment():
    env = dockerfile_env()
    ext = env.get('TORCH_EXTENSIONS_DIR')
    assert ext and os.path.isabs(ext), 'TORCH_EXTENSIONS_DIR must be set to an absolute path'
    runs = ' '.join(args for instr, args in dockerfile_instructions() if instr == 'RUN')
    # World-writable, so that any --user can build and cache the ops.
    m = re.search(r'chmod (-R )?1?777 ((?:\S+ ?)+)', runs)
    assert m and any(ext == d or ext.startswith(d.rstrip('/') + '/') for d in m.group(2).split()), runs
    assert any(instr == 'WORKDIR' for instr, _ in dockerfile_instructions())
    for instr, args in dockerfile_instructions():
        if instr in ('ENV', 'ARG'):
            assert not re.search(r'(TOKEN|PASSWORD|SECRET|API_?KEY|ACCESS_KEY)', args, re.I), args

def test_dockerignore():
    entries = {line.strip().rstrip('/') for line in read('.dockerignore').splitlines()
        if line.strip() and not line.startswith('#')}
    for name in ['.git', 'runs', 'datasets', '.cache', '.pytest_cache', '**/__pycache__']:
        assert name in entries, f'{name} missing from .dockerignore'
    for name in ['requirements.txt', 'torch_utils', 'training', '*.py', '**/*.py', '**/*.cu', '**/*.cpp']:
        assert name not in entries, f'.dockerignore must not exclude {name}'

#----------------------------------------------------------------------------
# README commands

_FENCE = r'^[ \t]*```[^\n]*\n(.*?)^[ \t]*```'  # Also indented (inside list items).

def fenced_blocks(text):
    """Contents of the ``` code blocks, in order."""
    return [m.group(1) for m in re.finditer(_FENCE, text, re.M | re.S)]

def inline_spans(text):
    """Inline `code` spans outside the fenced blocks."""
    prose = re.sub(_FENCE, '', text, flags=re.M | re.S)
    return re.findall(r'`([^`\n]+)`', prose)

def command_lines(block):
    """Logical lines of a block: continuations joined, comments dropped."""
    block = re.sub(r'\\\n', ' ', block)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith('#')]

def segments(line):
    """Simple commands of a shell line, each as a token list."""
    out = []
    for part in re.split(r'&&|\|\||[|;]', line):
        try:
            tokens = shlex.split(part, comments=True)
        except ValueError:
            tokens = part.split()
        if tokens:
            out.append(tokens)
    return out

def script_invocation(tokens, bare_script=False):
    """(script path, arguments) when the command runs a Python script of this
    repo (`python X.py ...`, also after docker run ... IMAGE or torchrun's
    options), else None. With bare_script, `X.py --opt` (prose) counts too."""
    if bare_script and tokens[0].endswith('.py') and len(tokens) > 1 and tokens[1].startswith('-'):
        return tokens[0], tokens[1:]
    for i, token in enumerate(tokens[:-1]):
        if os.path.basename(token) in PYTHONS and tokens[i + 1].endswith('.py'):
            return tokens[i + 1], tokens[i + 2:]
    if tokens[0] == 'torchrun':
        for i, token in enumerate(tokens):
            if token.endswith('.py'):
                return token, tokens[i + 1:]
    return None

def readme_invocations():
    """[(script, args, source line)] of every script command in README."""
    text = read('README.md')
    found = []
    for block in fenced_blocks(text):
        for line in command_lines(block):
            for tokens in segments(line):
                inv = script_invocation(tokens)
                if inv:
                    found.append((*inv, line))
    for span in inline_spans(text):
        for tokens in segments(span):
            inv = script_invocation(tokens, bare_script=True)
            if inv:
                found.append((*inv, span))
    return found

_commands = {}

def script_command(script):
    """The click command that `python script` runs: the name called under
    `if __name__ == '__main__':`, looked up in the imported module."""
    path = os.path.join(REPO, script)
    if path not in _commands:
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), filename=path)
        name = None
        for node in tree.body:
            if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                    and isinstance(node.test.left, ast.Name) and node.test.left.id == '__name__'):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
                        name = sub.func.id
                        break
        assert name, f'{script}: no `if __name__ == "__main__": command()`'
        module_name = '_packaging_' + re.sub(r'\W', '_', script)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        command = getattr(module, name)
        assert isinstance(command, click.Command), f'{script}: {name} is not a click command'
        _commands[path] = command
    return _commands[path]

def option_names(command):
    """Every option string of a click command (--help included)."""
    names = set()
    for param in command.get_params(click.Context(command)):
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names

def repo_scripts():
    """The command scripts: top-level *.py and bench/*.py run as `python X.py`."""
    scripts = []
    for path in sorted(glob.glob(os.path.join(REPO, '*.py')) + glob.glob(os.path.join(REPO, 'bench', '*.py'))):
        with open(path, encoding='utf-8') as f:
            source = f.read()
        if "__name__ == '__main__'" in source and 'click' in source:
            scripts.append(os.path.relpath(path, REPO).replace(os.sep, '/'))
    return scripts

def test_readme_first_two_commands():
    blocks = fenced_blocks(read('README.md'))
    assert len(blocks) >= 2
    setup_generate, setup_test = (command_lines(b) for b in blocks[:2])
    assert len(setup_generate) == 1 and len(setup_test) == 1, 'the first two blocks are one command each'
    assert 'pip install -r requirements.txt' in setup_generate[0]
    assert script_invocation(segments(setup_generate[0])[-1])[0] == 'gen_images.py'
    assert 'pip install -q -r requirements.txt' in setup_test[0] and 'pytest' in setup_test[0]
    ci = command_lines(read('.ci/run'))
    assert setup_test[0] in ci, '.ci/run must run exactly the README test command'

def test_readme_stands_alone():
    """What README links to is in the repository (a user's clone has nothing beside it)."""
    readme = read('README.md')
    assert '../' not in readme
    for target in re.findall(r'\]\(([^)#\s]+)\)', readme):
        if '://' not in target:
            assert os.path.exists(os.path.join(REPO, target)), f'README links {target}, which the repository lacks'

def test_readme_scripts_exist():
    invocations = readme_invocations()
    scripts = {script for script, _, _ in invocations}
    assert {'gen_images.py', 'train.py', 'calc_metrics.py', 'dataset_tool.py'} <= scripts
    for script in sorted(scripts):
        if script in PENDING_SCRIPTS and not os.path.exists(os.path.join(REPO, script)):
            continue
        assert os.path.isfile(os.path.join(REPO, script)), f'README runs {script}, which does not exist'

def test_readme_options_exist():
    """Every option README passes to a script is one of that script's click options;
    for a click group, of the subcommand named first."""
    checked = set()
    for script, args, line in readme_invocations():
        if not os.path.isfile(os.path.join(REPO, script)):
            continue # Reported by test_readme_scripts_exist (or pending).
        command = script_command(script)
        if isinstance(command, click.Group):
            positional = [a for a in args if not a.startswith('-')]
            assert positional and positional[0] in command.commands, f'{line}: no subcommand of {script}'
            command = command.commands[positional[0]]
        names = option_names(command)
        for arg in args:
            if re.match(r'^--?[A-Za-z]', arg) and (arg.startswith('--') or len(arg.split('=')[0]) == 2):
                option = arg.split('=', 1)[0]
                assert option in names, f'README: {script} has no option {option} ({line})'
                checked.add((script, option))
    assert len(checked) > 20

def test_readme_prose_options_exist():
    """Inline spans that list options (`--size WxH`, `--outdir --cfg ...`) name real ones."""
    known = set()
    for script in repo_scripts():
        command = script_command(script)
        commands = list(command.commands.values()) if isinstance(command, click.Group) else [command]
        for c in commands:
            known |= option_names(c)
    for span in inline_spans(read('README.md')):
        if span.startswith('--'):
            for option in re.findall(r'(?<![\w-])--[A-Za-z][\w-]*', span):
                assert option in known or option in EXTERNAL_OPTIONS, f'README mentions {option} ({span!r}), which no script has'

def test_pending_scripts_are_picked_up():
    """gen_video.py (and any new command script) is checked as soon as it exists."""
    scripts = repo_scripts()
    for script in PENDING_SCRIPTS:
        if os.path.exists(os.path.join(REPO, script)):
            assert script in scripts, f'{script} exists but is not recognized as a command script'
    for script in scripts:
        assert isinstance(script_command(script), click.Command)

#----------------------------------------------------------------------------
