"""What the queue, its histogram, its CSV and its bulk runs are narrowed by."""

import django_filters as filters
from django.utils import timezone

from lib.filters import FilterSet, livemode_filter, partner_filter, pool_filter

from .stuck import AGE_BANDS, BANDS


class StuckFilter(FilterSet):
    partner = partner_filter("order__partner__partner_id")
    pool = pool_filter()
    age = filters.ChoiceFilter(
        label="Age",
        choices=[(band.key, band.label) for band in AGE_BANDS],
        empty_label="any age",
        method="filter_age",
    )
    livemode = livemode_filter()

    def filter_age(self, queryset, name, value):
        return queryset.filter(BANDS[value].q(timezone.now()))

    def params(self):
        """The filters as asked, minus the empty ones: what a bulk run records and echoes."""
        return {
            name: str(self.form.data[name]).strip()
            for name in self.form.fields
            if str(self.form.data.get(name) or "").strip()
        }
