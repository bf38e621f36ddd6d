/* The logs.sessions frame encoder in C: msgpack as msgspec writes it (smallest integer form,
 * float64, str8 and up, fixarray), the same bytes as encode_framed's pure-Python form in
 * pipeline/wire/frames.py (tests encode the same lines both ways and compare).
 *
 * Why C: grouping, indexing and encoding cost ~0.6-1 us a line in Python (C calls already), beside
 * ~3.3 us a line for consume + orjson, the ingest benchmark's limit.
 *
 * Built by scripts/build_native.py with this file's sha256 in SOURCE_SHA256; pipeline/compiled.py
 * loads it only while that matches, so an edited source never runs stale code. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#ifndef HINDSIGHT_SOURCE_SHA256
#define HINDSIGHT_SOURCE_SHA256 "unknown"
#endif

#define FRAMED_FIELDS 17

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_grow(Buf *b, Py_ssize_t need) {
    if (b->len + need <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int put1(Buf *b, unsigned char c) {
    if (buf_grow(b, 1) < 0)
        return -1;
    b->data[b->len++] = (char)c;
    return 0;
}

static int put_be(Buf *b, unsigned char tag, unsigned long long v, int bytes) {
    if (buf_grow(b, 1 + bytes) < 0)
        return -1;
    b->data[b->len++] = (char)tag;
    for (int i = bytes - 1; i >= 0; i--)
        b->data[b->len++] = (char)((v >> (8 * i)) & 0xFF);
    return 0;
}

static int put_array(Buf *b, Py_ssize_t n) {
    if (n < 16)
        return put1(b, (unsigned char)(0x90 | n));
    if (n < 65536)
        return put_be(b, 0xdc, (unsigned long long)n, 2);
    return put_be(b, 0xdd, (unsigned long long)n, 4);
}

static int put_str(Buf *b, PyObject *s) {
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
    if (utf8 == NULL)
        return -1;
    int rc;
    if (n < 32)
        rc = put1(b, (unsigned char)(0xa0 | n));
    else if (n < 256)
        rc = put_be(b, 0xd9, (unsigned long long)n, 1);
    else if (n < 65536)
        rc = put_be(b, 0xda, (unsigned long long)n, 2);
    else
        rc = put_be(b, 0xdb, (unsigned long long)n, 4);
    if (rc < 0 || buf_grow(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, utf8, (size_t)n);
    b->len += n;
    return 0;
}

static int put_int(Buf *b, long long v) {
    if (v >= 0) {
        unsigned long long u = (unsigned long long)v;
        if (u < 128)
            return put1(b, (unsigned char)u);
        if (u < 256)
            return put_be(b, 0xcc, u, 1);
        if (u < 65536)
            return put_be(b, 0xcd, u, 2);
        if (u < 4294967296ULL)
            return put_be(b, 0xce, u, 4);
        return put_be(b, 0xcf, u, 8);
    }
    if (v >= -32)
        return put1(b, (unsigned char)(v & 0xFF));
    if (v >= -128)
        return put_be(b, 0xd0, (unsigned long long)v & 0xFF, 1);
    if (v >= -32768)
        return put_be(b, 0xd1, (unsigned long long)v & 0xFFFF, 2);
    if (v >= -2147483648LL)
        return put_be(b, 0xd2, (unsigned long long)v & 0xFFFFFFFFULL, 4);
    return put_be(b, 0xd3, (unsigned long long)v, 8);
}

/* None, bool, int (64-bit), float or str; anything else is a TypeError (the caller falls back). */
static int put_value(Buf *b, PyObject *v) {
    if (v == Py_None)
        return put1(b, 0xc0);
    if (v == Py_True)
        return put1(b, 0xc3);
    if (v == Py_False)
        return put1(b, 0xc2);
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_TypeError, "integer out of the 64-bit range");
            return -1;
        }
        if (x == -1 && PyErr_Occurred())
            return -1;
        return put_int(b, x);
    }
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        unsigned long long bits;
        memcpy(&bits, &d, 8);
        return put_be(b, 0xcb, bits, 8);
    }
    if (PyUnicode_CheckExact(v))
        return put_str(b, v);
    PyErr_Format(PyExc_TypeError, "cannot frame a %.100s", Py_TYPE(v)->tp_name);
    return -1;
}

/* a == b for a str and any value, without hashing: lines grouped by session mostly repeat the
 * previous line's service, endpoint and user, each a new object from the decoder (its hash not yet
 * computed), so comparing with the previous one first saves a hash and a dict lookup */
static int same_str(PyObject *a, PyObject *b) {
    if (a == b)
        return 1;
    if (!PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    return n == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b) &&
           memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)(n * PyUnicode_KIND(a))) == 0;
}

/* encode_framed(lines, timeout_attribute, frame, level_index) -> bytes */
static PyObject *encode_framed(PyObject *self, PyObject *args) {
    PyObject *lines, *attribute, *frame, *level_index;
    if (!PyArg_ParseTuple(args, "O!UO!O!", &PyList_Type, &lines, &attribute, &PyBytes_Type, &frame,
                          &PyDict_Type, &level_index))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(lines);
    PyObject *rank = NULL, *keys = NULL, *index = NULL, *result = NULL;
    Py_ssize_t *order = NULL, *counts = NULL, *starts = NULL, *ranks = NULL, *strings = NULL;
    Buf head = {NULL, 0, 0};

    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyTuple_CheckExact(line) || PyTuple_GET_SIZE(line) != FRAMED_FIELDS) {
            PyErr_SetString(PyExc_ValueError, "a framed line is a tuple of 17 fields");
            return NULL;
        }
        if (!PyBytes_Check(PyTuple_GET_ITEM(line, 16))) {
            PyErr_SetString(PyExc_TypeError, "a framed line's value must be bytes");
            return NULL;
        }
    }
    /* the sessions in order of their first line; the lines grouped by session, each group in the
     * order its lines came (a stable counting sort) */
    if ((rank = PyDict_New()) == NULL || (keys = PyList_New(0)) == NULL)
        goto done;
    ranks = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    order = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    if (ranks == NULL || order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyTuple_GET_ITEM(PyList_GET_ITEM(lines, i), 0);
        PyObject *r = PyDict_GetItemWithError(rank, key);
        if (r == NULL) {
            if (PyErr_Occurred())
                goto done;
            Py_ssize_t k = PyList_GET_SIZE(keys);
            PyObject *ro = PyLong_FromSsize_t(k);
            if (ro == NULL || PyDict_SetItem(rank, key, ro) < 0 || PyList_Append(keys, key) < 0) {
                Py_XDECREF(ro);
                goto done;
            }
            Py_DECREF(ro);
            ranks[i] = k;
        } else {
            ranks[i] = PyLong_AsSsize_t(r);
        }
    }
    Py_ssize_t nkeys = PyList_GET_SIZE(keys);
    counts = PyMem_Calloc((size_t)(nkeys ? nkeys : 1), sizeof(Py_ssize_t));
    starts = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(nkeys ? nkeys : 1));
    if (counts == NULL || starts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        counts[ranks[i]]++;
    Py_ssize_t acc = 0;
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        starts[k] = acc;
        acc += counts[k];
    }
    for (Py_ssize_t i = 0; i < n; i++)
        order[starts[ranks[i]]++] = i;
#define FIELD(i, f) PyTuple_GET_ITEM(PyList_GET_ITEM(lines, order[i]), f)

    /* the distinct strings: services, then endpoints, users, template ids, raw topics; each line's
     * index of each in strings[s * n + i] (in the order the columns are written) */
    if ((index = PyDict_New()) == NULL)
        goto done;
    static const int string_fields[] = {3, 4, 5, 9, 11};
    strings = PyMem_Malloc(sizeof(Py_ssize_t) * 5 * (size_t)(n ? n : 1));
    if (strings == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (int s = 0; s < 5; s++) {
        PyObject *prev = NULL;
        Py_ssize_t prev_at = -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = FIELD(i, string_fields[s]);
            if (prev != NULL && same_str(prev, v)) {
                strings[s * n + i] = prev_at;
                continue;
            }
            PyObject *seen = PyDict_GetItemWithError(index, v);
            Py_ssize_t at;
            if (seen == NULL) {
                if (PyErr_Occurred())
                    goto done;
                at = PyDict_GET_SIZE(index);
                PyObject *ato = PyLong_FromSsize_t(at);
                if (ato == NULL || PyDict_SetItem(index, v, ato) < 0) {
                    Py_XDECREF(ato);
                    goto done;
                }
                Py_DECREF(ato);
            } else {
                at = PyLong_AsSsize_t(seen);
            }
            strings[s * n + i] = prev_at = at;
            prev = v;
        }
    }
    /* the header: an array of _Header's 20 fields */
    if (put_array(&head, 20) < 0 || put_array(&head, nkeys) < 0)
        goto done;
    for (Py_ssize_t k = 0; k < nkeys; k++)
        if (put_value(&head, PyList_GET_ITEM(keys, k)) < 0)
            goto done;
    if (put_array(&head, nkeys) < 0)
        goto done;
    for (Py_ssize_t k = 0; k < nkeys; k++)
        if (put_int(&head, counts[k]) < 0)
            goto done;
    if (put_array(&head, PyDict_GET_SIZE(index)) < 0)
        goto done;
    {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(index, &pos, &k, &v)) /* insertion order: the order of first use */
            if (put_value(&head, k) < 0)
                goto done;
    }
    /* the per-line columns, in _Header's order: field, and how (-1 plain value, -2 level index,
     * else the string slot of its index) */
    static const int columns[][2] = {{1, -1}, {2, -2}, {3, 0}, {4, 1}, {5, 2}, {9, 3}, {6, -1}, {7, -1},
                                     {8, -1}, {10, -1}, {11, 4}, {12, -1}, {13, -1}, {14, -1}, {15, -1}};
    for (size_t c = 0; c < sizeof(columns) / sizeof(columns[0]); c++) {
        int f = columns[c][0], how = columns[c][1];
        if (put_array(&head, n) < 0)
            goto done;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = FIELD(i, f);
            int rc;
            if (how >= 0) {
                rc = put_int(&head, strings[how * n + i]);
            } else if (how == -2) {
                PyObject *level = PyDict_GetItemWithError(level_index, v);
                if (level == NULL) {
                    if (!PyErr_Occurred())
                        PyErr_SetObject(PyExc_KeyError, v);
                    goto done;
                }
                rc = put_int(&head, PyLong_AsLongLong(level));
            } else {
                rc = put_value(&head, v);
            }
            if (rc < 0 || PyErr_Occurred())
                goto done;
        }
    }
    /* ends: line i ends after "[" and i lines and commas before it */
    if (put_array(&head, n) < 0)
        goto done;
    Py_ssize_t end = 0, body = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len = PyBytes_GET_SIZE(FIELD(i, 16));
        end += len + 1;
        body += len;
        if (put_int(&head, end) < 0)
            goto done;
    }
    if (put_str(&head, attribute) < 0)
        goto done;

    /* FRAME, the header's length (4 bytes, big endian), the header, "[" the lines joined by "," "]" */
    Py_ssize_t fn = PyBytes_GET_SIZE(frame);
    Py_ssize_t total = fn + 4 + head.len + 1 + body + (n > 0 ? n - 1 : 0) + 1;
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        goto done;
    char *out = PyBytes_AS_STRING(result);
    memcpy(out, PyBytes_AS_STRING(frame), (size_t)fn);
    out += fn;
    unsigned long hl = (unsigned long)head.len;
    *out++ = (char)((hl >> 24) & 0xFF);
    *out++ = (char)((hl >> 16) & 0xFF);
    *out++ = (char)((hl >> 8) & 0xFF);
    *out++ = (char)(hl & 0xFF);
    memcpy(out, head.data, (size_t)head.len);
    out += head.len;
    *out++ = '[';
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = FIELD(i, 16);
        if (i)
            *out++ = ',';
        memcpy(out, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
        out += PyBytes_GET_SIZE(v);
    }
    *out++ = ']';
#undef FIELD
done:
    Py_XDECREF(rank);
    Py_XDECREF(keys);
    Py_XDECREF(index);
    PyMem_Free(order);
    PyMem_Free(counts);
    PyMem_Free(starts);
    PyMem_Free(ranks);
    PyMem_Free(strings);
    PyMem_Free(head.data);
    if (PyErr_Occurred()) {
        Py_CLEAR(result);
        return NULL;
    }
    return result;
}

static PyMethodDef methods[] = {
    {"encode_framed", encode_framed, METH_VARARGS, "A framed value (see frames.encode_framed)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_frames", "The frame encoder in C.", -1, methods};

PyMODINIT_FUNC PyInit__frames(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddStringConstant(m, "SOURCE_SHA256", HINDSIGHT_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
