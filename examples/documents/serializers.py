from rest_framework import serializers

from examples.documents.models import Document


class DocumentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Document
        fields = ["id", "title", "body", "folder", "owner", "private", "updated_at"]
