/*
 * list.h - intrusive circular doubly-linked list (header only).
 *
 * A struct list_node is embedded in the element; the list head is a bare
 * node pointing at itself when empty. container_of() gets the element back.
 * No allocation, no locking: the owner of the list protects it.
 */
#ifndef DTX_LIST_H
#define DTX_LIST_H

#include <stdbool.h>
#include <stddef.h>

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct list_node {
    struct list_node *prev, *next;
};

static inline void list_init(struct list_node *head)
{
    head->prev = head->next = head;
}

static inline bool list_empty(const struct list_node *head)
{
    return head->next == head;
}

/* True when n is on some list (nodes are list_init()ed when removed). */
static inline bool list_linked(const struct list_node *n)
{
    return n->next != n && n->next != NULL;
}

static inline void list_insert_tail(struct list_node *head, struct list_node *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

/* Unlinks n and re-initialises it; safe on an unlinked, initialised node. */
static inline void list_remove(struct list_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

#define list_for_each_safe(pos, tmp, head)                                                         \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

#endif
