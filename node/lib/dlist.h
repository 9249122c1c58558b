/* Intrusive doubly linked lists: the elements link themselves through two
 * pointer fields the caller names (so one element may sit on several lists),
 * and the list is the caller's head (and tail) pointers. A list with a tail
 * pointer appends (first in, first out); one without pushes at the front.
 * An unlinked element has both links NULL. Header only; no allocation. */
#ifndef QR_DLIST_H
#define QR_DLIST_H

#include <stddef.h>

#define QR_DLIST_APPEND(head, tail, e, prev, next) \
    do {                                           \
        (e)->prev = (tail);                        \
        (e)->next = NULL;                          \
        if ((tail) != NULL) {                      \
            (tail)->next = (e);                    \
        } else {                                   \
            (head) = (e);                          \
        }                                          \
        (tail) = (e);                              \
    } while (0)

#define QR_DLIST_PUSH(head, e, prev, next) \
    do {                                   \
        (e)->prev = NULL;                  \
        (e)->next = (head);                \
        if ((head) != NULL) {              \
            (head)->prev = (e);            \
        }                                  \
        (head) = (e);                      \
    } while (0)

#define QR_DLIST_UNLINK(head, e, prev, next) \
    do {                                     \
        if ((e)->prev != NULL) {             \
            (e)->prev->next = (e)->next;     \
        } else {                             \
            (head) = (e)->next;              \
        }                                    \
        if ((e)->next != NULL) {             \
            (e)->next->prev = (e)->prev;     \
        }                                    \
        (e)->prev = (e)->next = NULL;        \
    } while (0)

#define QR_DLIST_UNLINK_TAIL(head, tail, e, prev, next) \
    do {                                                \
        if ((e)->next == NULL) {                        \
            (tail) = (e)->prev;                         \
        }                                               \
        QR_DLIST_UNLINK(head, e, prev, next);           \
    } while (0)

#endif /* QR_DLIST_H */
