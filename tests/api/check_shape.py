#!/usr/bin/env python3
"""Checks that the public headers keep the API shape of docs/API.md.

Reads include/braid/*.h (path given as the first argument, or found from this file) and
fails when:
  - a braid_*_opts_t lacks braid_*_opts_init(T *) or
    int braid_*_opts_validate(const T *, braid_opts_error_t *), is an anonymous struct, or
    holds callbacks, a user pointer or an "is set" flag;
  - a constructor (*_new, braid_connect, braid_rpc_client/server, braid_work) takes its
    out-pointer anywhere but first;
  - a close callback type is not void (*)(braid_x_t *, int status, void *);
  - a *_close() takes a callback of another handle's type, or a *_free() returns non-void;
  - a callback type has an `int status` parameter anywhere but second;
  - a callback type hands out bytes as `const char *` + length (bytes are const uint8_t *);
  - a handle that calls back lacks braid_x_set_data / braid_x_get_data.

KNOWN lists violations not fixed yet; each must still be a violation (so the list only
shrinks), and the script fails on anything not in it.
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, '..', '..', 'include', 'braid')

CONSTRUCTORS_EXTRA = {'braid_connect', 'braid_rpc_client', 'braid_rpc_server', 'braid_work',
                      'braid_resolve'}
# Handles that deliver callbacks, so they carry user data (API.md rule 3).
DATA_HANDLES = ['loop', 'conn', 'server', 'rpc', 'pool', 'cache', 'batcher', 'resolver',
                'http_client', 'memcache', 'memcache_memo']
# Callbacks that report an outcome: int status is their second argument (API.md rule 4).
OUTCOME_CBS = ['braid_rpc_response_cb', 'braid_connect_cb', 'braid_pool_acquire_cb',
               'braid_write_cb', 'braid_cache_memo_cb', 'braid_gzip_done_cb',
               'braid_work_done_cb', 'braid_resolve_cb', 'braid_http_client_response_cb',
               'braid_http_client_body_cb', 'braid_memcache_cb', 'braid_memcache_memo_cb']

KNOWN = set(
    l.strip() for l in """
""".splitlines() if l.strip())


def strip_comments(text):
    text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
    text = re.sub(r'//[^\n]*', ' ', text)
    text = re.sub(r'^\s*#.*?(?<!\\)$', ' ', text, flags=re.M)
    return text


def norm(s):
    return re.sub(r'\s+', ' ', s).strip()


def split_params(params):
    params = norm(params)
    if params in ('', 'void'):
        return []
    return [p.strip() for p in params.split(',')]


def param_type(p):
    """'const braid_x_t *h' -> 'const braid_x_t *'; keeps the pointer stars."""
    m = re.match(r'^(.*?[\s*])(\w+)$', p)
    if not m:
        return p
    t = re.sub(r'\s*\*', '*', norm(m.group(1)))
    return re.sub(r'(\w)\*', r'\1 *', t).strip()


def param_name(p):
    m = re.match(r'^.*?[\s*](\w+)$', p)
    return m.group(1) if m else ''


def load():
    funcs, cbs, opts, anon_opts, bodies = {}, {}, set(), set(), {}
    for name in sorted(os.listdir(INCLUDE)):
        if not name.endswith('.h'):
            continue
        text = strip_comments(open(os.path.join(INCLUDE, name)).read())
        for m in re.finditer(r'BRAID_EXTERN\s+([^;{}]*?)\b(braid_\w+)\s*\(([^;{}]*?)\)\s*;', text):
            funcs[m.group(2)] = (norm(m.group(1)), split_params(m.group(3)), name)
        for m in re.finditer(r'typedef\s+([\w\s*]+?)\(\s*\*\s*(braid_\w+)\s*\)\s*\(([^;]*?)\)\s*;', text):
            cbs[m.group(2)] = (norm(m.group(1)), split_params(m.group(3)), name)
        for m in re.finditer(r'\}\s*(braid_\w+_opts_t)\s*;', text):
            opts.add(m.group(1))
            # The struct's own body: back to its matching brace.
            depth, i = 0, m.start()
            while i >= 0:
                if text[i] == '}':
                    depth += 1
                elif text[i] == '{':
                    depth -= 1
                    if depth == 0:
                        break
                i -= 1
            bodies[m.group(1)] = text[i:m.start()]
        for m in re.finditer(r'typedef\s+struct\s*\{', text):
            # Find the name this anonymous struct gets.
            depth, i = 0, m.end() - 1
            while i < len(text):
                if text[i] == '{':
                    depth += 1
                elif text[i] == '}':
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            n = re.match(r'\}\s*(\w+)\s*;', text[i:])
            if n and n.group(1).endswith('_opts_t'):
                anon_opts.add(n.group(1))
    return funcs, cbs, opts, anon_opts, bodies


def check():
    funcs, cbs, opts, anon_opts, bodies = load()
    problems = []

    for t in sorted(opts):
        base = t[:-len('_t')]  # braid_x_opts
        init, val = base + '_init', base + '_validate'
        f = funcs.get(init)
        if not f or f[0] != 'void' or [param_type(p) for p in f[1]] != [t + ' *']:
            problems.append('opts-init %s: needs void %s(%s *)' % (t, init, t))
        f = funcs.get(val)
        if not f or f[0] != 'int' or [param_type(p) for p in f[1]] != [
                'const ' + t + ' *', 'braid_opts_error_t *']:
            problems.append('opts-validate %s: needs int %s(const %s *, braid_opts_error_t *)'
                            % (t, val, t))
        if re.search(r'\bbraid_\w+_cb\b|\bvoid\s*\*\s*arg\b|\w+_set\s*;', bodies.get(t, '')):
            problems.append('opts-values %s: options hold values only (no callbacks, user '
                            'pointers or "is set" flags)' % t)
        if t in anon_opts:
            problems.append('opts-anonymous %s: needs a struct tag (%s_s)' % (t, base))
    # braid_sockopts_t keeps its name, with the same shape (API.md section 10).
    f = funcs.get('braid_sockopts_validate')
    if f and [param_type(p) for p in f[1]] != ['const braid_sockopts_t *', 'braid_opts_error_t *']:
        problems.append('opts-validate braid_sockopts_t: needs int braid_sockopts_validate('
                        'const braid_sockopts_t *, braid_opts_error_t *)')

    for name, (ret, params, _) in sorted(funcs.items()):
        if name.endswith('_new') or name in CONSTRUCTORS_EXTRA:
            outs = [i for i, p in enumerate(params) if re.match(r'^braid_\w+_t \*\*$', param_type(p))]
            if outs != [0]:
                problems.append('ctor-order %s: the out-pointer must be the first parameter' % name)
        if name.endswith('_free') and ret != 'void':
            problems.append('free-void %s: a synchronous free returns void' % name)
        m = re.match(r'^braid_(\w+)_close$', name)
        if m and params:
            h = 'braid_%s_t *' % m.group(1)
            types = [param_type(p) for p in params]
            if types[0] != h or (len(types) != 1 and (
                    len(types) != 3 or types[1] != 'braid_%s_close_cb' % m.group(1)
                    or types[2] != 'void *')):
                problems.append('close-args %s: takes (%s) or (%s, braid_%s_close_cb, void *)'
                                % (name, h, h, m.group(1)))

    for name, (ret, params, _) in sorted(cbs.items()):
        types = [param_type(p) for p in params]
        names = [param_name(p) for p in params]
        if name.endswith('_close_cb'):
            if ret != 'void' or len(types) != 3 or not re.match(r'^braid_\w+_t \*$', types[0]) \
                    or types[1] != 'int' or names[1] != 'status' or types[2] != 'void *':
                problems.append('close-cb %s: must be void (*)(braid_x_t *, int status, void *)'
                                % name)
        if name in OUTCOME_CBS and (len(names) < 2 or names[1] != 'status' or types[1] != 'int'):
            problems.append('status-pos %s: status must be the second argument' % name)
        elif 'status' in names and names.index('status') != 1:
            problems.append('status-pos %s: status must be the second argument' % name)
        for i in range(len(types) - 1):
            if types[i] == 'const char *' and types[i + 1] == 'size_t':
                problems.append('bytes %s: bytes handed out are const uint8_t *' % name)

    for h in DATA_HANDLES:
        t = 'braid_%s_t' % h
        s, g = funcs.get('braid_%s_set_data' % h), funcs.get('braid_%s_get_data' % h)
        if not s or [param_type(p) for p in s[1]] != [t + ' *', 'void *'] or \
                not g or g[0] != 'void *' or [param_type(p) for p in g[1]] != ['const ' + t + ' *']:
            problems.append('user-data %s: needs braid_%s_set_data(%s *, void *) and '
                            'void *braid_%s_get_data(const %s *)' % (t, h, t, h, t))
    return problems


SELF_TEST_HEADER = """
typedef struct { int a; } braid_bad_opts_t;
BRAID_EXTERN void braid_bad_opts_init(braid_bad_opts_t *o);
typedef struct braid_cb_opts_s { braid_x_cb on_x; void *arg; int framer_set; } braid_cb_opts_t;
BRAID_EXTERN int braid_bad_new(braid_loop_t *loop, braid_bad_t **out);
typedef void (*braid_bad_close_cb)(braid_bad_t *bad, void *arg);
BRAID_EXTERN int braid_bad_close(braid_bad_t *bad, braid_other_close_cb cb, void *arg);
BRAID_EXTERN int braid_bad_free(braid_bad_t *bad);
typedef void (*braid_bad_done_cb)(braid_bad_t *bad, void *x, int status, void *arg);
typedef void (*braid_bad_read_cb)(braid_bad_t *bad, int status, const char *data, size_t len,
                                  void *arg);
"""


def self_test():
    """The checker must catch each kind of violation in a header made to break them."""
    import tempfile
    global INCLUDE
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, 'bad.h'), 'w') as f:
            f.write(SELF_TEST_HEADER)
        INCLUDE = d
        got = {p.split(':')[0] for p in check()}
    want = {'opts-validate braid_bad_opts_t', 'opts-anonymous braid_bad_opts_t',
            'opts-init braid_cb_opts_t', 'opts-values braid_cb_opts_t',
            'ctor-order braid_bad_new', 'close-cb braid_bad_close_cb',
            'close-args braid_bad_close', 'free-void braid_bad_free',
            'status-pos braid_bad_done_cb', 'bytes braid_bad_read_cb',
            'user-data braid_conn_t'}
    missing = want - got
    for m in sorted(missing):
        print('SELF-TEST: not caught: ' + m)
    return 1 if missing else 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == '--self-test':
        return self_test()
    problems = check()
    keys = {p.split(':')[0] for p in problems}
    failed = False
    for p in problems:
        if p.split(':')[0] not in KNOWN:
            print('FAIL ' + p)
            failed = True
        else:
            print('known ' + p)
    for k in sorted(KNOWN - keys):
        print('FIXED %s: remove it from KNOWN in %s' % (k, os.path.basename(__file__)))
        failed = True
    if failed:
        return 1
    print('api shape: ok (%d known exceptions left)' % len(KNOWN))
    return 0


if __name__ == '__main__':
    sys.exit(main())
