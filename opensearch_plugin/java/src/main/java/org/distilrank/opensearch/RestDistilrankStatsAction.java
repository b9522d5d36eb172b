package org.distilrank.opensearch;

import org.opensearch.core.rest.RestStatus;
import org.opensearch.core.xcontent.XContentBuilder;
import org.opensearch.rest.BaseRestHandler;
import org.opensearch.rest.BytesRestResponse;
import org.opensearch.rest.RestRequest;
import org.opensearch.transport.client.node.NodeClient;

import java.util.List;

/**
 * {@code GET /_plugins/distilrank/stats}: this node's ranker calls, failures and failovers, per replica too, and the
 * model defaults in use (node-local, reset on restart).
 */
public class RestDistilrankStatsAction extends BaseRestHandler {

    @Override
    public String getName() {
        return "distilrank_stats";
    }

    @Override
    public List<Route> routes() {
        return List.of(new Route(RestRequest.Method.GET, "/_plugins/distilrank/stats"));
    }

    @Override
    protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient nodeClient) {
        return channel -> {
            XContentBuilder builder = channel.newBuilder();
            RankerClient client = DistilrankPlugin.client();
            client.stats().toXContent(builder, client);
            channel.sendResponse(new BytesRestResponse(RestStatus.OK, builder));
        };
    }
}
