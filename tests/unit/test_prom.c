/* test_prom.c - the Prometheus text format and histograms (prom.c). */
#include "dtx/prom.h"
#include "unit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct prom_buckets three = {.n = 3, .le = {0.001, 0.01, 0.1}};

static char *render_hist(const struct prom_hist *h, const struct prom_label *l, size_t n)
{
    struct prom p;

    prom_init(&p);
    prom_family(&p, "x_seconds", "histogram", "How long x took.");
    prom_histogram(&p, "x_seconds", l, n, h);
    return prom_finish(&p);
}

static void histogram_buckets_are_cumulative_and_end_with_inf(void)
{
    static const struct prom_label l[] = {{"protocol", "2pc"}, {"outcome", "committed"}};
    struct prom_hist h;
    char *s;

    prom_hist_init(&h, &three);
    prom_hist_observe(&h, 0.0005); /* le 0.001 */
    prom_hist_observe(&h, 0.001);  /* a value on a bound belongs to that bucket */
    prom_hist_observe(&h, 0.05);   /* le 0.1 */
    prom_hist_observe(&h, 2);      /* +Inf only */
    s = render_hist(&h, l, 2);
    CU_ASSERT_STRING_EQUAL(
        s, "# HELP x_seconds How long x took.\n"
           "# TYPE x_seconds histogram\n"
           "x_seconds_bucket{protocol=\"2pc\",outcome=\"committed\",le=\"0.001\"} 2\n"
           "x_seconds_bucket{protocol=\"2pc\",outcome=\"committed\",le=\"0.01\"} 2\n"
           "x_seconds_bucket{protocol=\"2pc\",outcome=\"committed\",le=\"0.1\"} 3\n"
           "x_seconds_bucket{protocol=\"2pc\",outcome=\"committed\",le=\"+Inf\"} 4\n"
           "x_seconds_sum{protocol=\"2pc\",outcome=\"committed\"} 2.0515\n"
           "x_seconds_count{protocol=\"2pc\",outcome=\"committed\"} 4\n");
    free(s);
}

static void empty_histogram_without_labels_has_every_bucket_at_zero(void)
{
    struct prom_hist h;
    char *s;

    prom_hist_init(&h, &three);
    s = render_hist(&h, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "x_seconds_bucket{le=\"0.001\"} 0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "x_seconds_bucket{le=\"+Inf\"} 0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "\nx_seconds_sum 0\nx_seconds_count 0\n"));
    free(s);
}

static void zeroed_histogram_has_the_inf_bucket_only(void)
{
    struct prom_hist h;
    char *s;

    memset(&h, 0, sizeof(h));
    prom_hist_observe(&h, 3);
    s = render_hist(&h, NULL, 0);
    CU_ASSERT_STRING_EQUAL(s, "# HELP x_seconds How long x took.\n"
                              "# TYPE x_seconds histogram\n"
                              "x_seconds_bucket{le=\"+Inf\"} 1\n"
                              "x_seconds_sum 3\n"
                              "x_seconds_count 1\n");
    free(s);
}

static void nan_is_not_observed(void)
{
    struct prom_hist h;

    prom_hist_init(&h, &three);
    prom_hist_observe(&h, NAN);
    CU_ASSERT_EQUAL(h.count, 0);
    CU_ASSERT_EQUAL(h.sum, 0);
}

static void standard_bucket_tables_ascend(void)
{
    const struct prom_buckets *tables[] = {&prom_seconds_buckets, &prom_size_buckets};

    for (size_t t = 0; t < 2; t++) {
        CU_ASSERT(tables[t]->n > 0 && tables[t]->n <= PROM_HIST_MAX_BOUNDS);
        for (size_t i = 1; i < tables[t]->n; i++)
            CU_ASSERT(tables[t]->le[i] > tables[t]->le[i - 1]);
    }
}

static void label_values_are_escaped(void)
{
    static const struct prom_label l[] = {{"shard", "a\"b\\c\nd"}, {"state", "up"}};
    struct prom p;
    char *s;

    prom_init(&p);
    prom_family(&p, "y", "gauge", "Y.");
    prom_sample_labels(&p, "y", l, 2, 1);
    prom_sample(&p, "y", "shard", "s1", 0.5);
    prom_sample(&p, "y", NULL, NULL, 7);
    s = prom_finish(&p);
    CU_ASSERT_STRING_EQUAL(s, "# HELP y Y.\n# TYPE y gauge\n"
                              "y{shard=\"a\\\"b\\\\c\\nd\",state=\"up\"} 1\n"
                              "y{shard=\"s1\"} 0.5\n"
                              "y 7\n");
    free(s);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(histogram_buckets_are_cumulative_and_end_with_inf),
        UNIT_TEST(empty_histogram_without_labels_has_every_bucket_at_zero),
        UNIT_TEST(zeroed_histogram_has_the_inf_bucket_only),
        UNIT_TEST(nan_is_not_observed),
        UNIT_TEST(standard_bucket_tables_ascend),
        UNIT_TEST(label_values_are_escaped),
    };

    return unit_run("prom", tests, sizeof(tests) / sizeof(tests[0]));
}
