from django.urls import path

from examples.documents import views

urlpatterns = [
    path("documents/", views.create_document, name="document-create"),
    path("documents/<int:pk>/", views.change_document, name="document-change"),
    path("documents/<int:pk>/snapshot/", views.document_snapshot, name="document-snapshot"),
]
