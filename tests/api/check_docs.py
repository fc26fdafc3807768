#!/usr/bin/env python3
"""The README points a newcomer at everything there is: every example program, the API rules,
the changelog, and the kv example's wire format (docs/PROTOCOL.md section 9, whose heading
must still say so). Every docs/*.md and examples/*.c path the README names must exist.

Usage: check_docs.py SOURCE_ROOT"""
import os
import re
import sys

root = sys.argv[1]
readme = open(os.path.join(root, 'README.md')).read()
problems = []
for name in sorted(os.listdir(os.path.join(root, 'examples'))):
    if name.endswith('.c') and 'examples/' + name not in readme:
        problems.append('README does not mention examples/%s' % name)
for doc in ['docs/API.md', 'CHANGELOG.md', 'docs/PROTOCOL.md', 'docs/ARCHITECTURE.md']:
    if doc not in readme:
        problems.append('README does not mention %s' % doc)
if not re.search(r'PROTOCOL\.md`?\s+section\s+9', readme):
    problems.append('README does not point at docs/PROTOCOL.md section 9 (the kv wire format)')
protocol = open(os.path.join(root, 'docs', 'PROTOCOL.md')).read()
if not re.search(r'^## 9\. Key-value operations', protocol, re.M):
    problems.append('docs/PROTOCOL.md section 9 is no longer "Key-value operations": fix the pointers')
for path in sorted(set(re.findall(r'`((?:docs|examples)/[\w./-]+)`', readme))):
    if not os.path.exists(os.path.join(root, path)):
        problems.append('README names %s, which does not exist' % path)
for p in problems:
    print('FAIL ' + p)
print('docs: %d problems' % len(problems))
sys.exit(1 if problems else 0)
