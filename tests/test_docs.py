"""The docs stay current: their citations resolve, every result is cited, no work periods."""
import os
import re
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
PAGES = ['README.md', 'BUILD_NOTES.md'] + sorted(
    os.path.join('docs', name) for name in os.listdir(os.path.join(ROOT, 'docs'))
    if name.endswith('.md'))
RESULT_PATH = re.compile(r'results/[A-Za-z0-9_.\-]+[A-Za-z0-9]')
SOURCE_PATH = re.compile(r'(?:lstm_jax|experiments|tests)/[A-Za-z0-9_]+\.(?:py|sh)')
# Announced in a page before it is written (docs/quality.md, "Scoreboard").
NOT_YET_WRITTEN = set()


def _read(path):
  with open(os.path.join(ROOT, path), encoding='utf-8') as f:
    return f.read()


def _result_files():
  """The files in results/ as committed (git), else as on disk; README.md excluded."""
  try:
    listed = subprocess.run(['git', 'ls-files', 'results'], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
  except (OSError, subprocess.CalledProcessError):
    listed = []
  names = ([os.path.relpath(p, 'results') for p in listed] if listed
           else os.listdir(os.path.join(ROOT, 'results')))
  return sorted(n for n in names if n != 'README.md')


def test_every_cited_path_exists():
  missing = []
  for page in PAGES + ['results/README.md']:
    text = _read(page)
    for path in set(RESULT_PATH.findall(text)) | set(SOURCE_PATH.findall(text)):
      if path in NOT_YET_WRITTEN or path == 'results/README.md':
        continue
      if not os.path.exists(os.path.join(ROOT, path)):
        missing.append(f'{page}: {path}')
  assert not missing, missing


def test_every_result_is_cited_by_a_page_and_listed():
  cited = set()
  for page in PAGES:
    cited |= set(RESULT_PATH.findall(_read(page)))
  listed = _read(os.path.join('results', 'README.md'))
  files = _result_files()
  assert files
  uncited = [n for n in files if f'results/{n}' not in cited]
  unlisted = [n for n in files if f'`{n}`' not in listed]
  assert not uncited, f'results/ files no page cites: {uncited}'
  assert not unlisted, f'results/ files results/README.md does not list: {unlisted}'


def _anchors(page):
  """GitHub's heading anchors of a Markdown page."""
  heads = re.findall(r'^#+ (.*)$', re.sub(r'```.*?```', '', _read(page), flags=re.S), re.M)
  return {re.sub(r'[^\w\- ]', '', h.lower()).replace(' ', '-') for h in heads}


def test_every_link_between_pages_resolves():
  broken = []
  for page in PAGES + ['results/README.md']:
    here = os.path.dirname(page)
    for target, anchor in re.findall(r'\]\(([^)#\s]*)(?:#([^)\s]+))?\)', _read(page)):
      if target.startswith('http'):
        continue
      path = os.path.normpath(os.path.join(here, target)) if target else page
      if not os.path.exists(os.path.join(ROOT, path)):
        broken.append(f'{page}: {target}')
      elif anchor and path.endswith('.md') and anchor not in _anchors(path):
        broken.append(f'{page}: {target}#{anchor}')
  assert not broken, broken


@pytest.mark.parametrize('page', PAGES + ['results/README.md'])
def test_pages_cite_no_work_periods(page):
  text = _read(page)
  assert not re.search(r'\bstops? [0-9]+', text, re.I)
  assert not re.search(r'\b20[0-9]{2}-[01][0-9]-[0-3][0-9]\b', text)


def test_result_names_carry_no_work_period():
  dated = [n for n in _result_files() if re.search(r'_s[0-9]+\b|_stop[0-9]+|20[0-9]{2}-[0-9]', n)]
  assert not dated, dated


def test_install_commands_open_the_readme():
  head = '\n'.join(_read('README.md').splitlines()[:30])
  assert ('pip install -e . && python -m experiments.noise_regression --workdir=runs/seed'
          in head)
  assert ("pip install -e '.[test,real,gw]' && python -m pytest -q -n 2 --dist loadfile tests"
          in head)
  ci = _read(os.path.join('.ci', 'run'))
  assert 'python -m pytest -q -n 2 --dist loadfile tests' in ci and "'.[test,real,gw]'" in ci
