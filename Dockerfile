# TensorFlow Serving for every model exported into saved_models/ (see README: Serving).
#   docker build -t keras-ucaps-serving .
#   docker run --rm -p 8500:8500 -p 8501:8501 keras-ucaps-serving
FROM tensorflow/serving:2.19.0

COPY saved_models/ /models/

# gRPC on 8500, REST on 8501; all models listed in models.config; server-side batching on.
EXPOSE 8500 8501
ENTRYPOINT ["tensorflow_model_server", \
            "--port=8500", \
            "--rest_api_port=8501", \
            "--model_config_file=/models/models.config", \
            "--model_config_file_poll_wait_seconds=60", \
            "--enable_batching=true", \
            "--batching_parameters_file=/models/batching.config"]
