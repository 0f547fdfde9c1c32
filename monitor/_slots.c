/* Setting and reading many __slots__ fields of one object in a single call.
 *
 * monitor/slots.py says what for and when; the pure-Python path does the same through
 * each field's descriptor (a call per field: 27 of them per event).  A field is found
 * once, by name, as the class's member descriptor, and read or written at its offset
 * from then on, as CPython's own descriptor does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

/* Each field's offset in the object, from its member descriptor on `cls`. */
static Py_ssize_t *
field_offsets(PyTypeObject *cls, PyObject *names, Py_ssize_t *count)
{
    PyObject *seq = PySequence_Fast(names, "field names must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_ssize_t *offsets = PyMem_New(Py_ssize_t, n > 0 ? n : 1);
    if (offsets == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *descr = PyObject_GetAttr((PyObject *)cls, name);
        if (descr == NULL)
            goto fail;
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%R is not a __slots__ field of %s",
                         name, cls->tp_name);
            Py_DECREF(descr);
            goto fail;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        PyTypeObject *owner = PyDescr_TYPE(descr);
        int usable = member->type == T_OBJECT_EX && !(member->flags & READONLY)
                     && PyType_IsSubtype(cls, owner);
        Py_DECREF(descr);
        if (!usable) {
            PyErr_Format(PyExc_TypeError, "%R is not a writable object field of %s",
                         name, cls->tp_name);
            goto fail;
        }
        offsets[i] = member->offset;
    }
    Py_DECREF(seq);
    *count = n;
    return offsets;
fail:
    PyMem_Free(offsets);
    Py_DECREF(seq);
    return NULL;
}

#define SLOT(obj, offset) ((PyObject **)((char *)(obj) + (offset)))

/* -- Setter: setter(obj, v1, ..., vn) sets the n fields -------------------------- */

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    Py_ssize_t n;
    Py_ssize_t *offsets;
    vectorcallfunc vectorcall;
} Setter;

static PyObject *
setter_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Setter *s = (Setter *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "a setter takes no keyword arguments");
        return NULL;
    }
    if (nargs != s->n + 1) {
        PyErr_Format(PyExc_TypeError, "a setter of %s takes the object and %zd values, not %zd",
                     s->cls->tp_name, s->n, nargs);
        return NULL;
    }
    PyObject *obj = args[0];
    if (!PyObject_TypeCheck(obj, s->cls)) {
        PyErr_Format(PyExc_TypeError, "expected a %s, not %s", s->cls->tp_name,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < s->n; i++) {
        PyObject *value = args[i + 1];
        Py_INCREF(value);
        Py_XSETREF(*SLOT(obj, s->offsets[i]), value);
    }
    Py_RETURN_NONE;
}

static PyObject *
setter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyTypeObject *cls;
    PyObject *names;
    static char *kwlist[] = {"cls", "names", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O:Setter", kwlist, &PyType_Type, &cls,
                                     &names))
        return NULL;
    Setter *self = (Setter *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->offsets = field_offsets(cls, names, &self->n);
    if (self->offsets == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(cls);
    self->cls = cls;
    self->vectorcall = setter_call;
    return (PyObject *)self;
}

static void
setter_dealloc(Setter *self)
{
    PyMem_Free(self->offsets);
    Py_XDECREF(self->cls);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject SetterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "monitor._slots.Setter",
    .tp_doc = PyDoc_STR("Setter(cls, names)(obj, *values): set the named __slots__ fields"),
    .tp_basicsize = sizeof(Setter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = setter_new,
    .tp_dealloc = (destructor)setter_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Setter, vectorcall),
};

/* -- timestamp(dt): dt.timestamp(), worked out here for a datetime in UTC ---------------
 *
 * For an aware datetime, Python's timestamp() is (dt - epoch).total_seconds(): the
 * microseconds since 1970 as an int, divided by 10**6 and correctly rounded.  Below 2**53
 * microseconds (the years 1685 to 2255) both are exact doubles and the division of
 * doubles is correctly rounded too: the same float.  Any other datetime asks Python.
 */

static int64_t
days_from_civil(int y, int m, int d)
{
    /* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm) */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static PyObject *timestamp_name; /* "timestamp", interned */

static PyObject *
timestamp_of(PyObject *value)
{
    if (PyDateTime_CheckExact(value) && ((PyDateTime_DateTime *)value)->hastzinfo
        && ((PyDateTime_DateTime *)value)->tzinfo == PyDateTime_TimeZone_UTC) {
        int64_t days = days_from_civil(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                                       PyDateTime_GET_DAY(value));
        int64_t seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(value) * 3600
                          + PyDateTime_DATE_GET_MINUTE(value) * 60
                          + PyDateTime_DATE_GET_SECOND(value);
        int64_t micros = seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(value);
        const int64_t exact = (int64_t)1 << 53;
        if (micros > -exact && micros < exact)
            return PyFloat_FromDouble((double)micros / 1e6);
    }
    return PyObject_CallMethodNoArgs(value, timestamp_name);
}

static PyObject *
slots_timestamp(PyObject *module, PyObject *value)
{
    (void)module;
    return timestamp_of(value);
}

/* -- Getter: getter(obj) -> tuple of the n fields, some converted ----------------- */

enum { AS_IS = 0, TIMESTAMP = 1, PLAIN = 2, PLAIN_OR_SAME = 3 };

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    Py_ssize_t n;
    Py_ssize_t *offsets;
    unsigned char *kinds;
    PyObject *plain; /* dict */
    vectorcallfunc vectorcall;
} Getter;

static PyObject *
getter_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Getter *g = (Getter *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "a getter takes one object");
        return NULL;
    }
    PyObject *obj = args[0];
    if (!PyObject_TypeCheck(obj, g->cls)) {
        PyErr_Format(PyExc_TypeError, "expected a %s, not %s", g->cls->tp_name,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyObject *out = PyTuple_New(g->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < g->n; i++) {
        PyObject *value = *SLOT(obj, g->offsets[i]);
        if (value == NULL) {
            PyErr_Format(PyExc_AttributeError, "field %zd of the %s is not set", i,
                         g->cls->tp_name);
            goto fail;
        }
        switch (g->kinds[i]) {
        case TIMESTAMP:
            value = timestamp_of(value);
            if (value == NULL)
                goto fail;
            break;
        case PLAIN: {
            PyObject *found = PyDict_GetItemWithError(g->plain, value);
            if (found == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_KeyError, value);
                goto fail;
            }
            value = Py_NewRef(found);
            break;
        }
        case PLAIN_OR_SAME: {
            if (value != Py_None) {
                PyObject *found = PyDict_GetItemWithError(g->plain, value);
                if (found == NULL && PyErr_Occurred())
                    goto fail;
                if (found != NULL)
                    value = found;
            }
            Py_INCREF(value);
            break;
        }
        default:
            Py_INCREF(value);
        }
        PyTuple_SET_ITEM(out, i, value);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *
getter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyTypeObject *cls;
    PyObject *names, *kinds, *plain;
    static char *kwlist[] = {"cls", "names", "kinds", "plain", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOO!:Getter", kwlist, &PyType_Type, &cls,
                                     &names, &kinds, &PyDict_Type, &plain))
        return NULL;
    Getter *self = (Getter *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->offsets = field_offsets(cls, names, &self->n);
    if (self->offsets == NULL)
        goto fail;
    PyObject *seq = PySequence_Fast(kinds, "kinds must be a sequence");
    if (seq == NULL)
        goto fail;
    if (PySequence_Fast_GET_SIZE(seq) != self->n) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "one kind per field name");
        goto fail;
    }
    self->kinds = PyMem_Malloc(self->n > 0 ? self->n : 1);
    if (self->kinds == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < self->n; i++) {
        long kind = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (kind < AS_IS || kind > PLAIN_OR_SAME) {
            Py_DECREF(seq);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "unknown kind %ld", kind);
            goto fail;
        }
        self->kinds[i] = (unsigned char)kind;
    }
    Py_DECREF(seq);
    Py_INCREF(cls);
    self->cls = cls;
    Py_INCREF(plain);
    self->plain = plain;
    self->vectorcall = getter_call;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static void
getter_dealloc(Getter *self)
{
    PyMem_Free(self->offsets);
    PyMem_Free(self->kinds);
    Py_XDECREF(self->cls);
    Py_XDECREF(self->plain);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject GetterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "monitor._slots.Getter",
    .tp_doc = PyDoc_STR("Getter(cls, names, kinds, plain)(obj): the named __slots__ fields "
                        "as a tuple; kind 1 calls .timestamp(), 2 maps through plain, "
                        "3 maps through plain where found and not None"),
    .tp_basicsize = sizeof(Getter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = getter_new,
    .tp_dealloc = (destructor)getter_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Getter, vectorcall),
};

/* -- ids: identity(prefix, *parts) and event_id(source, kind, *parts) -------------------
 *
 * As monitor.model.identity_after and event_id make them: the parts joined by U+001F
 * (None as "", but in identity's first three places, which it formats as they are; a
 * str as it is, anything else as its str()), as UTF-8 (surrogateescape where strict
 * UTF-8 refuses a part, as the Python functions encode the whole text then), hashed with
 * BLAKE2b-128 by hashlib's own blake2b.  identity's id is `prefix` and the digest's first
 * 24 hex digits; event_id's the 32 of the digest.  The UTF-8 is gathered in one buffer
 * part by part: no str of the joined text, no bytes of each part, no Python frame.
 */

/* The id's text, gathered as UTF-8: on the stack while it is short (ids' texts are a few
 * hundred bytes), else on the heap. */
typedef struct {
    unsigned char small[1024];
    unsigned char *data;
    size_t len, cap;
} Text;

static void
text_init(Text *t)
{
    t->data = t->small;
    t->len = 0;
    t->cap = sizeof t->small;
}

static void
text_free(Text *t)
{
    if (t->data != t->small)
        PyMem_Free(t->data);
}

static int
text_add(Text *t, const unsigned char *bytes, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = t->cap;
        while (t->len + n > cap)
            cap *= 2;
        unsigned char *grown = PyMem_Malloc(cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(grown, t->data, t->len);
        text_free(t);
        t->data = grown;
        t->cap = cap;
    }
    memcpy(t->data + t->len, bytes, n);
    t->len += n;
    return 0;
}

static PyObject *blake2b_type;      /* hashlib's blake2b (the _blake2 module's) */
static PyObject *digest_size_kwnames; /* ("digest_size",) */
static PyObject *digest_name;       /* "digest" */
static PyObject *sixteen;           /* 16 */

/* BLAKE2b-128 of the text, by hashlib's blake2b: 16 bytes into `out`. */
static int
text_digest(Text *t, unsigned char *out)
{
    PyObject *data = PyBytes_FromStringAndSize((const char *)t->data, (Py_ssize_t)t->len);
    if (data == NULL)
        return -1;
    PyObject *args[2] = {data, sixteen};
    PyObject *h = PyObject_Vectorcall(blake2b_type, args, 1, digest_size_kwnames);
    Py_DECREF(data);
    if (h == NULL)
        return -1;
    PyObject *digest = PyObject_CallMethodNoArgs(h, digest_name);
    Py_DECREF(h);
    if (digest == NULL)
        return -1;
    int ok = PyBytes_Check(digest) && PyBytes_GET_SIZE(digest) == 16;
    if (ok)
        memcpy(out, PyBytes_AS_STRING(digest), 16);
    else
        PyErr_SetString(PyExc_ValueError, "blake2b gave no 16-byte digest");
    Py_DECREF(digest);
    return ok ? 0 : -1;
}

/* Hash one part's text as UTF-8. */
static int
hash_text(Text *s, PyObject *text)
{
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 != NULL) {
        return text_add(s, (const unsigned char *)utf8, (size_t)size);
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    PyErr_Clear(); /* undecodable input bytes kept as surrogates */
    PyObject *raw = PyUnicode_AsEncodedString(text, "utf-8", "surrogateescape");
    if (raw == NULL)
        return -1;
    int failed = text_add(s, (const unsigned char *)PyBytes_AS_STRING(raw),
                          (size_t)PyBytes_GET_SIZE(raw));
    Py_DECREF(raw);
    return failed;
}

/* Hash `parts` joined by U+001F: None as "" from the part numbered `none_from` on (as
 * str() before it), a str as it is, anything else as its str(). */
static int
hash_parts(Text *s, PyObject *const *parts, Py_ssize_t n, Py_ssize_t none_from)
{
    static const unsigned char separator = 0x1f;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = parts[i];
        if (i > 0 && text_add(s, &separator, 1) < 0)
            return -1;
        if (part == Py_None && i >= none_from)
            continue;
        if (PyUnicode_CheckExact(part)) {
            if (hash_text(s, part) < 0)
                return -1;
            continue;
        }
        PyObject *text = PyObject_Str(part);
        if (text == NULL)
            return -1;
        int failed = hash_text(s, text);
        Py_DECREF(text);
        if (failed)
            return -1;
    }
    return 0;
}

static const char hexdigits[] = "0123456789abcdef";

static void
to_hex(const unsigned char *digest, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdigits[digest[i] >> 4];
        out[2 * i + 1] = hexdigits[digest[i] & 15];
    }
}

/* The BLAKE2b-128 digest of the parts' text, as identity or (`event_id`) event_id join them. */
static int
digest_of(PyObject *const *parts, Py_ssize_t n, int event_id, unsigned char *out)
{
    Text t;
    text_init(&t);
    static const unsigned char separator = 0x1f;
    int failed;
    if (event_id) {
        /* source and kind as their text, as str.join takes a str subclass; the rest as
         * str() */
        failed = hash_text(&t, parts[0]) < 0 || text_add(&t, &separator, 1) < 0
                 || hash_text(&t, parts[1]) < 0
                 || (n > 2 && (text_add(&t, &separator, 1) < 0
                               || hash_parts(&t, parts + 2, n - 2, 0) < 0));
    }
    else {
        /* identity_after formats source, kind and seconds as they are (None as "None") */
        failed = hash_parts(&t, parts, n, 3) < 0;
    }
    if (!failed)
        failed = text_digest(&t, out) < 0;
    text_free(&t);
    return failed ? -1 : 0;
}

static PyObject *
slots_identity(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "identity(prefix: str, *parts)");
        return NULL;
    }
    unsigned char digest[16];
    if (digest_of(args + 1, nargs - 1, 0, digest) < 0)
        return NULL;
    char hex[24];
    to_hex(digest, sizeof hex / 2, hex);
    PyObject *tail = PyUnicode_FromStringAndSize(hex, sizeof hex);
    if (tail == NULL)
        return NULL;
    PyObject *id = PyUnicode_Concat(args[0], tail);
    Py_DECREF(tail);
    return id;
}

static PyObject *
slots_event_id(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 2 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "event_id(source: str, kind: str, *parts)");
        return NULL;
    }
    unsigned char digest[16];
    if (digest_of(args, nargs, 1, digest) < 0)
        return NULL;
    char hex[32];
    to_hex(digest, sizeof digest, hex);
    return PyUnicode_FromStringAndSize(hex, sizeof hex);
}

static PyMethodDef slots_methods[] = {
    {"identity", (PyCFunction)(void (*)(void))slots_identity, METH_FASTCALL,
     PyDoc_STR("identity(prefix, *parts): prefix and 24 hex digits of the BLAKE2b-128 of "
               "the parts joined by U+001F (monitor.model.identity_after)")},
    {"timestamp", (PyCFunction)slots_timestamp, METH_O,
     PyDoc_STR("timestamp(dt): dt.timestamp(), without a call into Python for one in UTC")},
    {"event_id", (PyCFunction)(void (*)(void))slots_event_id, METH_FASTCALL,
     PyDoc_STR("event_id(source, kind, *parts): the 32 hex digits of the BLAKE2b-128 of "
               "the parts joined by U+001F, None as \"\" (monitor.model.event_id)")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "monitor._slots",
    .m_doc = PyDoc_STR("Many __slots__ fields of one object in one call (monitor/slots.py)."),
    .m_size = -1,
    .m_methods = slots_methods,
};

PyMODINIT_FUNC
PyInit__slots(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    timestamp_name = PyUnicode_InternFromString("timestamp");
    if (timestamp_name == NULL)
        return NULL;
    PyObject *blake2 = PyImport_ImportModule("_blake2");
    if (blake2 == NULL)
        return NULL;
    blake2b_type = PyObject_GetAttrString(blake2, "blake2b");
    Py_DECREF(blake2);
    digest_name = PyUnicode_InternFromString("digest");
    digest_size_kwnames = Py_BuildValue("(s)", "digest_size");
    sixteen = PyLong_FromLong(16);
    if (blake2b_type == NULL || digest_name == NULL || digest_size_kwnames == NULL
        || sixteen == NULL)
        return NULL;
    if (PyType_Ready(&SetterType) < 0 || PyType_Ready(&GetterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Setter", (PyObject *)&SetterType) < 0
        || PyModule_AddObjectRef(m, "Getter", (PyObject *)&GetterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
