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
 * BLAKE2b-128 (RFC 7693, unkeyed).  identity's id is `prefix` and the digest's first 24
 * hex digits; event_id's the 32 of the digest.  The parts are hashed as they come: the
 * joined text is never made.
 */

typedef struct {
    uint64_t h[8];
    uint64_t t; /* bytes hashed so far (an id's text is short: the counter's high word is 0) */
    unsigned char buf[128];
    size_t fill;
} Blake2b;

static const uint64_t blake2b_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
    0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
    0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const unsigned char blake2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t
rotr64(uint64_t x, unsigned n)
{
    return (x >> n) | (x << (64 - n));
}

static inline uint64_t
load64(const unsigned char *p)
{
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16)
           | ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40)
           | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

#define G(r, i, a, b, c, d)                              \
    do {                                                 \
        a = a + b + m[blake2b_sigma[r][2 * (i)]];        \
        d = rotr64(d ^ a, 32);                           \
        c = c + d;                                       \
        b = rotr64(b ^ c, 24);                           \
        a = a + b + m[blake2b_sigma[r][2 * (i) + 1]];    \
        d = rotr64(d ^ a, 16);                           \
        c = c + d;                                       \
        b = rotr64(b ^ c, 63);                           \
    } while (0)

/* The rounds spelled out: the message word of each step is then a constant index. */
#define ROUND(r)                                         \
    do {                                                 \
        G(r, 0, v[0], v[4], v[8], v[12]);                \
        G(r, 1, v[1], v[5], v[9], v[13]);                \
        G(r, 2, v[2], v[6], v[10], v[14]);               \
        G(r, 3, v[3], v[7], v[11], v[15]);               \
        G(r, 4, v[0], v[5], v[10], v[15]);               \
        G(r, 5, v[1], v[6], v[11], v[12]);               \
        G(r, 6, v[2], v[7], v[8], v[13]);                \
        G(r, 7, v[3], v[4], v[9], v[14]);                \
    } while (0)

static void
blake2b_compress(Blake2b *s, const unsigned char *block, int last)
{
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = s->h[i];
        v[i + 8] = blake2b_iv[i];
    }
    v[12] ^= s->t;
    if (last)
        v[14] = ~v[14];
    ROUND(0);
    ROUND(1);
    ROUND(2);
    ROUND(3);
    ROUND(4);
    ROUND(5);
    ROUND(6);
    ROUND(7);
    ROUND(8);
    ROUND(9);
    ROUND(10);
    ROUND(11);
    for (int i = 0; i < 8; i++)
        s->h[i] ^= v[i] ^ v[i + 8];
}

static void
blake2b_init(Blake2b *s, size_t outlen)
{
    memcpy(s->h, blake2b_iv, sizeof s->h);
    s->h[0] ^= 0x01010000ULL ^ (uint64_t)outlen; /* depth 1, fanout 1, no key */
    s->t = 0;
    s->fill = 0;
}

static void
blake2b_update(Blake2b *s, const unsigned char *data, size_t len)
{
    while (len > 0) {
        if (s->fill == sizeof s->buf) { /* full and more to come: not the last block */
            s->t += sizeof s->buf;
            blake2b_compress(s, s->buf, 0);
            s->fill = 0;
        }
        size_t take = sizeof s->buf - s->fill;
        if (take > len)
            take = len;
        memcpy(s->buf + s->fill, data, take);
        s->fill += take;
        data += take;
        len -= take;
    }
}

static void
blake2b_final(Blake2b *s, unsigned char *out, size_t outlen)
{
    s->t += s->fill;
    memset(s->buf + s->fill, 0, sizeof s->buf - s->fill);
    blake2b_compress(s, s->buf, 1);
    for (size_t i = 0; i < outlen; i++)
        out[i] = (unsigned char)(s->h[i / 8] >> (8 * (i % 8)));
}

/* Hash one part's text as UTF-8. */
static int
hash_text(Blake2b *s, PyObject *text)
{
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 != NULL) {
        blake2b_update(s, (const unsigned char *)utf8, (size_t)size);
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    PyErr_Clear(); /* undecodable input bytes kept as surrogates */
    PyObject *raw = PyUnicode_AsEncodedString(text, "utf-8", "surrogateescape");
    if (raw == NULL)
        return -1;
    blake2b_update(s, (const unsigned char *)PyBytes_AS_STRING(raw),
                   (size_t)PyBytes_GET_SIZE(raw));
    Py_DECREF(raw);
    return 0;
}

/* Hash `parts` joined by U+001F: None as "" from the part numbered `none_from` on (as
 * str() before it), a str as it is, anything else as its str(). */
static int
hash_parts(Blake2b *s, PyObject *const *parts, Py_ssize_t n, Py_ssize_t none_from)
{
    static const unsigned char separator = 0x1f;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = parts[i];
        if (i > 0)
            blake2b_update(s, &separator, 1);
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

static PyObject *
slots_identity(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "identity(prefix: str, *parts)");
        return NULL;
    }
    Blake2b s;
    blake2b_init(&s, 16);
    /* identity_after formats source, kind and seconds as they are (None as "None") */
    if (hash_parts(&s, args + 1, nargs - 1, 3) < 0)
        return NULL;
    unsigned char digest[16];
    blake2b_final(&s, digest, sizeof digest);
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
    Blake2b s;
    blake2b_init(&s, 16);
    /* source and kind as their text, as str.join takes a str subclass; the rest as str() */
    static const unsigned char separator = 0x1f;
    if (hash_text(&s, args[0]) < 0)
        return NULL;
    blake2b_update(&s, &separator, 1);
    if (hash_text(&s, args[1]) < 0)
        return NULL;
    if (nargs > 2) {
        blake2b_update(&s, &separator, 1);
        if (hash_parts(&s, args + 2, nargs - 2, 0) < 0)
            return NULL;
    }
    unsigned char digest[16];
    blake2b_final(&s, digest, sizeof digest);
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
