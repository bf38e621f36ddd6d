/* Ingest's per-line hot loop in C: the same steps as its pure-Python form (IngestStage._route_py in
 * pipeline/ingest/stage.py); tests run both on the same messages and compare what they route.
 *
 * Why C: on single-line messages the Python loop around msgspec's decode cost ~2 us a line and the
 * frame encoder ~1 us (of ~6.5 us a line in all), where consume + orjson alone is ~3.3 us. mypyc gave
 * nothing here (the loop reads msgspec structs and confluent-kafka Messages, untyped to it). What is
 * not the common case (another shape, a line to dead-letter, a session key to derive, a template not
 * yet cached) calls back into Python, so every rule stays in one place.
 *
 * Built by scripts/build_native.py with this file's sha256 in SOURCE_SHA256; pipeline/compiled.py
 * loads it only while that matches, so an edited source never runs stale code. */

#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h> /* PyMemberDef: where a struct's fields sit in the object */

#ifndef HINDSIGHT_SOURCE_SHA256
#define HINDSIGHT_SOURCE_SHA256 "unknown"
#endif

#define FLAG_SECURITY 1
#define FLAG_TIMEOUT 2
#define FRAMED_FIELDS 17

static PyObject *s_error, *s_topic, *s_partition, *s_offset, *s_timestamp, *s_value;
static PyObject *s_f_timestamp, *s_f_service, *s_f_level, *s_f_message, *s_f_observed, *s_f_session,
    *s_f_user, *s_f_endpoint, *s_f_latency, *s_f_status, *s_f_security, *s_f_attributes;
static PyObject *zero;

/* The message's six methods, looked up once per message type rather than on every call (~0.1 us a
 * line): the type's descriptors called with the message as their one argument. Only where that is
 * what a call by name does: a type without an instance __dict__ (nothing can shadow the method)
 * whose six are methods of a C type or plain functions; any other type is called by name. */
enum { M_ERROR, M_TOPIC, M_PARTITION, M_OFFSET, M_TIMESTAMP, M_VALUE, M_COUNT };
static PyObject **const method_names[M_COUNT] = {&s_error, &s_topic, &s_partition, &s_offset, &s_timestamp,
                                                 &s_value};
static PyTypeObject *msg_type;          /* the type the descriptors are of (a strong reference) */
static PyObject *msg_methods[M_COUNT];  /* NULL: called by name */

static int bind_methods(PyTypeObject *type) {
    if (type == msg_type)
        return 0;
    PyObject *found[M_COUNT] = {NULL};
    int all = type->tp_dictoffset == 0;
    for (int k = 0; k < M_COUNT && all; k++) {
        found[k] = PyObject_GetAttr((PyObject *)type, *method_names[k]);
        if (found[k] == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                goto fail;
            PyErr_Clear();
            all = 0;
        } else if (!Py_IS_TYPE(found[k], &PyMethodDescr_Type) && !PyFunction_Check(found[k])) {
            all = 0; /* a staticmethod, classmethod, property or other callable: by name */
        }
    }
    for (int k = 0; k < M_COUNT; k++) {
        Py_XSETREF(msg_methods[k], all ? found[k] : NULL);
        if (!all)
            Py_XDECREF(found[k]);
    }
    Py_INCREF(type);
    Py_XSETREF(msg_type, type);
    return 0;
fail:
    for (int k = 0; k < M_COUNT; k++)
        Py_XDECREF(found[k]);
    return -1;
}

static PyObject *call0(PyObject *msg, int k) {
    if (Py_TYPE(msg) == msg_type && msg_methods[k] != NULL)
        return PyObject_Vectorcall(msg_methods[k], &msg, 1, NULL);
    return PyObject_CallMethodNoArgs(msg, *method_names[k]);
}

/* The canonical struct's fields read from their slots (msgspec keeps them as members, as __slots__
 * do): PyObject_GetAttr on 12 fields a line cost ~2.8k instructions, a slot read a few. Only for
 * objects of exactly that type whose fields are all object members; else by name. */
enum { F_TIMESTAMP, F_SERVICE, F_LEVEL, F_MESSAGE, F_OBSERVED, F_SESSION, F_USER, F_ENDPOINT, F_LATENCY,
       F_STATUS, F_SECURITY, F_ATTRIBUTES, F_COUNT };
static PyObject **const field_names[F_COUNT] = {&s_f_timestamp, &s_f_service, &s_f_level, &s_f_message,
                                                &s_f_observed, &s_f_session, &s_f_user, &s_f_endpoint,
                                                &s_f_latency, &s_f_status, &s_f_security, &s_f_attributes};
static PyTypeObject *struct_type;         /* a strong reference */
static Py_ssize_t field_offsets[F_COUNT]; /* -1: read by name */

static int bind_fields(PyTypeObject *type) {
    if (type == struct_type)
        return 0;
    Py_ssize_t offsets[F_COUNT];
    for (int f = 0; f < F_COUNT; f++) {
        offsets[f] = -1;
        PyObject *descr = PyObject_GetAttr((PyObject *)type, *field_names[f]);
        if (descr == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
            continue;
        }
        if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            if (member->type == T_OBJECT_EX || member->type == T_OBJECT)
                offsets[f] = member->offset;
        }
        Py_DECREF(descr);
    }
    memcpy(field_offsets, offsets, sizeof(offsets));
    Py_INCREF(type);
    Py_XSETREF(struct_type, type);
    return 0;
}

/* a new reference to the field, or NULL with an exception */
static PyObject *field(PyObject *item, int f) {
    if (Py_TYPE(item) == struct_type && field_offsets[f] >= 0) {
        PyObject *v = *(PyObject **)((char *)item + field_offsets[f]);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(item, *field_names[f]);
}

static int untrackable(PyObject *line) {
    for (Py_ssize_t f = 0; f < FRAMED_FIELDS; f++) {
        PyObject *v = PyTuple_GET_ITEM(line, f);
        if (!(v == Py_None || PyUnicode_CheckExact(v) || PyLong_CheckExact(v) || PyFloat_CheckExact(v) ||
              PyBytes_CheckExact(v) || PyBool_Check(v)))
            return 0;
    }
    return 1;
}

/* a run of one raw partition ended at `offset`: positions[run] = the next offset to read */
static int note_next(PyObject *positions, PyObject *run, long offset) {
    PyObject *next = PyLong_FromLong(offset + 1);
    if (next == NULL)
        return -1;
    int rc = PyDict_SetItem(positions, run, next);
    Py_DECREF(next);
    return rc;
}

/* route(messages, ctx, pending, positions, starts, errors) -> (count, fast)
 *
 * ctx: (decode, declined, known, partition_of, id_of, session_key_of, slow, flush, max_lines,
 *       max_bytes, attribute, observed_marker, struct_type)
 * - decode(value) -> canonical struct (of struct_type), raising one of `declined` when it is not one;
 * - known: session key -> partition (partition_of(key) fills it on a miss);
 * - id_of(message) -> template id; session_key_of(struct) -> key when it has no session id;
 * - slow(msg, topic, partition, offset, ts_us): the other shapes (appends to pending itself);
 * - flush(part, lines): one canonical message of a full partition's lines. */
static PyObject *route(PyObject *self, PyObject *args) {
    PyObject *messages, *ctx, *pending, *positions, *starts, *errors;
    if (!PyArg_ParseTuple(args, "OO!O!O!O!O!", &messages, &PyTuple_Type, &ctx, &PyDict_Type, &pending,
                          &PyDict_Type, &positions, &PyDict_Type, &starts, &PyList_Type, &errors))
        return NULL;
    PyObject *decode, *declined, *known, *partition_of, *id_of, *session_key_of, *slow, *flush,
        *attribute, *marker, *type;
    Py_ssize_t max_lines, max_bytes;
    if (!PyArg_ParseTuple(ctx, "OOO!OOOOOnnUSO!", &decode, &declined, &PyDict_Type, &known, &partition_of,
                          &id_of, &session_key_of, &slow, &flush, &max_lines, &max_bytes, &attribute,
                          &marker, &PyType_Type, &type))
        return NULL;
    if (bind_fields((PyTypeObject *)type) < 0)
        return NULL;
    const char *marker_s = PyBytes_AS_STRING(marker);
    Py_ssize_t marker_n = PyBytes_GET_SIZE(marker);

    PyObject *seq = PySequence_Fast(messages, "messages must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t count = 0, fast = 0;
    PyObject *topic = NULL, *run = NULL; /* the current run's topic (borrowed) and (topic, partition) */
    long partition = -1, offset = -1;
    PyObject *t = NULL, *p = NULL, *o = NULL, *ts = NULL, *value = NULL, *item = NULL, *tmp = NULL;
    PyObject *key = NULL, *part = NULL, *tid = NULL, *observed = NULL, *line = NULL;

#define DROP()                                                                                       \
    do {                                                                                             \
        Py_CLEAR(t); Py_CLEAR(p); Py_CLEAR(o); Py_CLEAR(ts); Py_CLEAR(value); Py_CLEAR(item);           \
        Py_CLEAR(key); Py_CLEAR(part); Py_CLEAR(tid); Py_CLEAR(observed); Py_CLEAR(line);              \
    } while (0)

    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *msg = items[i];
        if (bind_methods(Py_TYPE(msg)) < 0)
            goto fail;
        tmp = call0(msg, M_ERROR);
        if (tmp == NULL)
            goto fail;
        if (tmp != Py_None) {
            int rc = PyList_Append(errors, tmp);
            Py_DECREF(tmp);
            if (rc < 0)
                goto fail;
            continue;
        }
        Py_DECREF(tmp);
        count++;
        if ((t = call0(msg, M_TOPIC)) == NULL || (p = call0(msg, M_PARTITION)) == NULL ||
            (o = call0(msg, M_OFFSET)) == NULL)
            goto fail;
        long pn = PyLong_AsLong(p);
        if (pn == -1 && PyErr_Occurred())
            goto fail;
        int same = 0;
        if (topic != NULL && pn == partition) {
            same = PyObject_RichCompareBool(t, topic, Py_EQ);
            if (same < 0)
                goto fail;
        }
        if (!same) {
            /* consume() hands out runs of one partition: note where a run starts and ends */
            if (run != NULL) {
                if (note_next(positions, run, offset) < 0)
                    goto fail;
                Py_CLEAR(run);
            }
            run = PyTuple_Pack(2, t, p);
            if (run == NULL)
                goto fail;
            if (PyDict_SetDefault(starts, run, o) == NULL)
                goto fail;
            topic = PyTuple_GET_ITEM(run, 0);
            partition = pn;
        }
        offset = PyLong_AsLong(o);
        if (offset == -1 && PyErr_Occurred())
            goto fail;

        /* the broker's time in us, or None (kind 0: no timestamp) */
        tmp = call0(msg, M_TIMESTAMP);
        if (tmp == NULL)
            goto fail;
        if (!PyTuple_Check(tmp) || PyTuple_GET_SIZE(tmp) != 2) {
            Py_DECREF(tmp);
            PyErr_SetString(PyExc_TypeError, "timestamp() must give (kind, ms)");
            goto fail;
        }
        {
            long kind = PyLong_AsLong(PyTuple_GET_ITEM(tmp, 0));
            long long stamp = PyLong_AsLongLong(PyTuple_GET_ITEM(tmp, 1));
            Py_DECREF(tmp);
            if (PyErr_Occurred())
                goto fail;
            if (kind && stamp > 0) {
                if ((ts = PyLong_FromLongLong(stamp * 1000)) == NULL)
                    goto fail;
            } else {
                ts = Py_NewRef(Py_None);
            }
        }
        if ((value = call0(msg, M_VALUE)) == NULL)
            goto fail;

        /* the fast path: one canonical JSON object, passed on as the bytes it came in */
        if (PyBytes_Check(value) && PyBytes_GET_SIZE(value) > 0 && PyBytes_GET_SIZE(value) <= max_bytes &&
            PyBytes_AS_STRING(value)[0] == '{') {
            item = PyObject_CallOneArg(decode, value);
            if (item == NULL) {
                if (!PyErr_ExceptionMatches(declined))
                    goto fail;
                PyErr_Clear();
            }
        }
        if (item != NULL) {
            if ((observed = field(item, F_OBSERVED)) == NULL)
                goto fail;
            int given = observed != Py_None;
            int truthy = given ? PyObject_IsTrue(observed) : 0;
            if (truthy < 0)
                goto fail;
            if (!truthy && memmem(PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value), marker_s,
                                  (size_t)marker_n) != NULL)
                Py_CLEAR(item); /* present but null (or 0): the slow path fills it */
            else if (given)
                Py_SETREF(observed, Py_NewRef(Py_None));
            else if (ts != Py_None)
                Py_SETREF(observed, Py_NewRef(ts));
            else if ((tmp = field(item, F_TIMESTAMP)) == NULL)
                goto fail;
            else
                Py_SETREF(observed, tmp);
        }
        if (item == NULL) {
            Py_CLEAR(observed);
            tmp = PyObject_CallFunctionObjArgs(slow, msg, t, p, o, ts, NULL);
            if (tmp == NULL)
                goto fail;
            Py_DECREF(tmp);
            DROP();
            continue;
        }
        /* the session key and its partition */
        if ((key = field(item, F_SESSION)) == NULL)
            goto fail;
        if (!(PyUnicode_Check(key) && PyUnicode_GET_LENGTH(key) > 0)) {
            Py_SETREF(key, PyObject_CallOneArg(session_key_of, item));
            if (key == NULL)
                goto fail;
        }
        part = PyDict_GetItemWithError(known, key);
        if (part != NULL) {
            Py_INCREF(part);
        } else {
            if (PyErr_Occurred() || (part = PyObject_CallOneArg(partition_of, key)) == NULL)
                goto fail;
        }
        PyObject *message = field(item, F_MESSAGE);
        if (message == NULL)
            goto fail;
        tid = PyObject_CallOneArg(id_of, message);
        Py_ssize_t size = PyUnicode_Check(message) ? PyUnicode_GET_LENGTH(message) : PyObject_Length(message);
        Py_DECREF(message);
        if (tid == NULL || size < 0)
            goto fail;
        long flags = 0;
        if ((tmp = field(item, F_SECURITY)) == NULL)
            goto fail;
        int truth = PyObject_IsTrue(tmp);
        Py_DECREF(tmp);
        if (truth < 0)
            goto fail;
        if (truth)
            flags |= FLAG_SECURITY;
        if ((tmp = field(item, F_ATTRIBUTES)) == NULL)
            goto fail;
        if (PyDict_Check(tmp) && PyDict_GET_SIZE(tmp) > 0) {
            int has = PyDict_Contains(tmp, attribute);
            if (has < 0) {
                Py_DECREF(tmp);
                goto fail;
            }
            if (has)
                flags |= FLAG_TIMEOUT;
        } else if (!PyDict_Check(tmp)) {
            Py_DECREF(tmp);
            PyErr_SetString(PyExc_TypeError, "a canonical line's attributes must be a dict");
            goto fail;
        }
        Py_DECREF(tmp);
        /* (key, time, level, service, endpoint, user, latency, status, flags, template id, message
         * length, raw topic, raw partition, raw offset, raw index, observed, value): FramedLine */
        line = PyTuple_New(FRAMED_FIELDS);
        if (line == NULL)
            goto fail;
        PyTuple_SET_ITEM(line, 0, Py_NewRef(key));
        static const int fields[] = {F_TIMESTAMP, F_LEVEL, F_SERVICE, F_ENDPOINT, F_USER, F_LATENCY, F_STATUS};
        for (int f = 0; f < 7; f++) {
            PyObject *v = field(item, fields[f]);
            if (v == NULL)
                goto fail;
            PyTuple_SET_ITEM(line, 1 + f, v);
        }
        PyObject *flags_obj = PyLong_FromLong(flags), *size_obj = PyLong_FromSsize_t(size);
        if (flags_obj == NULL || size_obj == NULL) {
            Py_XDECREF(flags_obj);
            Py_XDECREF(size_obj);
            goto fail;
        }
        PyTuple_SET_ITEM(line, 8, flags_obj);
        PyTuple_SET_ITEM(line, 9, Py_NewRef(tid));
        PyTuple_SET_ITEM(line, 10, size_obj);
        PyTuple_SET_ITEM(line, 11, Py_NewRef(t));
        PyTuple_SET_ITEM(line, 12, Py_NewRef(p));
        PyTuple_SET_ITEM(line, 13, Py_NewRef(o));
        PyTuple_SET_ITEM(line, 14, Py_NewRef(zero));
        PyTuple_SET_ITEM(line, 15, Py_NewRef(observed));
        PyTuple_SET_ITEM(line, 16, Py_NewRef(value));
        /* its items are str, int, float, bool, bytes or None: it can be in no cycle, and the collector
         * need not walk it (the lines of a poll wait in `pending`; gc's passes over them cost ~0.3 us
         * a line). The struct's fields are of exactly those types: a subclass of str or int could
         * hold references, so they are checked. */
        if (untrackable(line))
            PyObject_GC_UnTrack(line);

        PyObject *batch = PyDict_GetItemWithError(pending, part); /* borrowed */
        if (batch == NULL) {
            if (PyErr_Occurred() || (batch = PyList_New(0)) == NULL)
                goto fail;
            int rc = PyDict_SetItem(pending, part, batch);
            Py_DECREF(batch); /* the dict holds it */
            if (rc < 0)
                goto fail;
        }
        if (PyList_Append(batch, line) < 0)
            goto fail;
        fast++;
        if (PyList_GET_SIZE(batch) >= max_lines) {
            Py_INCREF(batch);
            tmp = PyObject_CallFunctionObjArgs(flush, part, batch, NULL);
            Py_DECREF(batch);
            if (tmp == NULL)
                goto fail;
            Py_DECREF(tmp);
            PyObject *fresh = PyList_New(0);
            if (fresh == NULL)
                goto fail;
            int rc = PyDict_SetItem(pending, part, fresh);
            Py_DECREF(fresh);
            if (rc < 0)
                goto fail;
        }
        DROP();
    }
    if (run != NULL && note_next(positions, run, offset) < 0)
        goto fail;
    Py_XDECREF(run);
    Py_DECREF(seq);
    return Py_BuildValue("nn", count, fast);
fail:
    DROP();
    Py_XDECREF(run);
    Py_DECREF(seq);
    return NULL;
#undef DROP
}

/* murmur2(data) -> the Java client's Utils.murmur2 of the bytes, as an unsigned 32-bit int (the
 * pure-Python hash took ~5 us for a session key; a new key comes every ~25 lines in the benchmark) */
static PyObject *murmur2(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "murmur2 hashes bytes");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t length = PyBytes_GET_SIZE(arg);
    const uint32_t m = 0x5bd1e995u;
    uint32_t h = 0x9747b28cu ^ (uint32_t)length;
    Py_ssize_t whole = length & ~(Py_ssize_t)3;
    for (Py_ssize_t i = 0; i < whole; i += 4) {
        uint32_t k = (uint32_t)data[i] | ((uint32_t)data[i + 1] << 8) | ((uint32_t)data[i + 2] << 16) |
                     ((uint32_t)data[i + 3] << 24);
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (length & 3) {
    case 3:
        h ^= (uint32_t)data[whole + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)data[whole + 1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)data[whole];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return PyLong_FromUnsignedLong(h);
}

static PyMethodDef methods[] = {
    {"route", route, METH_VARARGS, "Route a poll's messages (see IngestStage._route_py)."},
    {"murmur2", murmur2, METH_O, "The Java client's murmur2 of bytes (unsigned 32 bits)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_route", "Ingest's hot loop in C.", -1, methods};
PyMODINIT_FUNC PyInit__route(void) {
#define INTERN(var, text)                                                                            \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                              \
        return NULL;
    INTERN(s_error, "error") INTERN(s_topic, "topic") INTERN(s_partition, "partition")
    INTERN(s_offset, "offset") INTERN(s_timestamp, "timestamp") INTERN(s_value, "value")
    INTERN(s_f_timestamp, "timestamp") INTERN(s_f_service, "service") INTERN(s_f_level, "level")
    INTERN(s_f_message, "message") INTERN(s_f_observed, "observed_timestamp")
    INTERN(s_f_session, "session_id") INTERN(s_f_user, "user_id") INTERN(s_f_endpoint, "endpoint")
    INTERN(s_f_latency, "latency_ms") INTERN(s_f_status, "status_code")
    INTERN(s_f_security, "security_flags") INTERN(s_f_attributes, "attributes")
#undef INTERN
    if ((zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddStringConstant(m, "SOURCE_SHA256", HINDSIGHT_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
