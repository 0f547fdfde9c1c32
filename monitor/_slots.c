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

/* -- Getter: getter(obj) -> tuple of the n fields, some converted ----------------- */

enum { AS_IS = 0, TIMESTAMP = 1, PLAIN = 2, PLAIN_OR_SAME = 3 };

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    Py_ssize_t n;
    Py_ssize_t *offsets;
    unsigned char *kinds;
    PyObject *plain; /* dict */
    PyObject *timestamp; /* "timestamp", interned */
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
            value = PyObject_CallMethodNoArgs(value, g->timestamp);
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
    self->timestamp = PyUnicode_InternFromString("timestamp");
    if (self->timestamp == NULL)
        goto fail;
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
    Py_XDECREF(self->timestamp);
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

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "monitor._slots",
    .m_doc = PyDoc_STR("Many __slots__ fields of one object in one call (monitor/slots.py)."),
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__slots(void)
{
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
