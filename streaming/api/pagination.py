"""Page-number pagination that refuses what it cannot read instead of ignoring it."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class StrictPageNumberPagination(PageNumberPagination):
    """`?page=&page_size=`; a `page_size` that is not an integer from 1 is a 400, one above
    `max_page_size` is capped (DRF's rule), and a page past the end is a 404."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request: Any) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None or raw == "":
            return self.page_size
        if not raw.isdigit() or int(raw) < 1:
            raise ValidationError({self.page_size_query_param: "An integer from 1."})
        return min(int(raw), self.max_page_size)
