package org.distilrank.opensearch;

import org.opensearch.cluster.metadata.IndexNameExpressionResolver;
import org.opensearch.cluster.node.DiscoveryNodes;
import org.opensearch.cluster.service.ClusterService;
import org.opensearch.common.settings.ClusterSettings;
import org.opensearch.common.settings.IndexScopedSettings;
import org.opensearch.common.settings.Setting;
import org.opensearch.common.settings.Settings;
import org.opensearch.common.settings.SettingsFilter;
import org.opensearch.common.unit.TimeValue;
import org.opensearch.core.common.io.stream.NamedWriteableRegistry;
import org.opensearch.core.xcontent.NamedXContentRegistry;
import org.opensearch.env.Environment;
import org.opensearch.env.NodeEnvironment;
import org.opensearch.plugins.ActionPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.plugins.SearchPlugin;
import org.opensearch.repositories.RepositoriesService;
import org.opensearch.rest.RestController;
import org.opensearch.rest.RestHandler;
import org.opensearch.script.ScriptService;
import org.opensearch.threadpool.ThreadPool;
import org.opensearch.transport.client.Client;
import org.opensearch.watcher.ResourceWatcherService;

import java.util.Collection;
import java.util.List;
import java.util.function.Function;
import java.util.function.Supplier;

/**
 * Registers the {@code distilrank} rescorer, its node/cluster settings and {@code GET /_plugins/distilrank/stats}.
 */
public class DistilrankPlugin extends Plugin implements SearchPlugin, ActionPlugin {

    public static final Setting<String> ENDPOINT = Setting.simpleString(
        "distilrank.ranker.endpoint", "http://127.0.0.1:8080", DistilrankPlugin::validateEndpoint,
        Setting.Property.NodeScope, Setting.Property.Dynamic);
    /** Ranker replicas (round robin, failover); when empty, the one {@code distilrank.ranker.endpoint}. */
    public static final Setting<List<String>> ENDPOINTS = Setting.listSetting(
        "distilrank.ranker.endpoints", List.of(), Function.identity(), DistilrankPlugin::validateEndpoints,
        Setting.Property.NodeScope, Setting.Property.Dynamic);
    public static final Setting<TimeValue> CONNECT_TIMEOUT = Setting.timeSetting(
        "distilrank.ranker.connect_timeout", TimeValue.timeValueMillis(500), TimeValue.timeValueMillis(1),
        Setting.Property.NodeScope, Setting.Property.Dynamic);
    public static final Setting<TimeValue> READ_TIMEOUT = Setting.timeSetting(
        "distilrank.ranker.read_timeout", TimeValue.timeValueSeconds(2), TimeValue.timeValueMillis(1),
        Setting.Property.NodeScope, Setting.Property.Dynamic);
    public static final Setting<Integer> BREAKER_FAILURE_THRESHOLD = Setting.intSetting(
        "distilrank.breaker.failure_threshold", 5, 1, Setting.Property.NodeScope, Setting.Property.Dynamic);
    public static final Setting<TimeValue> BREAKER_OPEN_DURATION = Setting.timeSetting(
        "distilrank.breaker.open_duration", TimeValue.timeValueSeconds(30), TimeValue.timeValueMillis(0),
        Setting.Property.NodeScope, Setting.Property.Dynamic);

    /** One client per node: the rescorer's parser is static, so it reaches the client through this holder. */
    private static volatile RankerClient client = new RankerClient(Settings.EMPTY);

    public DistilrankPlugin(Settings settings) {
        client = new RankerClient(settings);
    }

    static RankerClient client() {
        return client;
    }

    /** The replicas to call: {@code distilrank.ranker.endpoints}, else {@code [distilrank.ranker.endpoint]}. */
    static List<String> endpoints(Settings settings) {
        return resolveEndpoints(ENDPOINT.get(settings), ENDPOINTS.get(settings));
    }

    private static List<String> resolveEndpoints(String one, List<String> many) {
        return many.isEmpty() ? List.of(one) : many;
    }

    private static void validateEndpoints(List<String> values) {
        for (String v : values) validateEndpoint(v);
    }

    private static void validateEndpoint(String value) {
        if (!(value.startsWith("http://") || value.startsWith("https://"))) {
            throw new IllegalArgumentException(
                "distilrank.ranker.endpoint must start with http:// or https://, got [" + value + "]");
        }
    }

    @Override
    public List<Setting<?>> getSettings() {
        return List.of(ENDPOINT, ENDPOINTS, CONNECT_TIMEOUT, READ_TIMEOUT, BREAKER_FAILURE_THRESHOLD,
            BREAKER_OPEN_DURATION);
    }

    @Override
    public Collection<Object> createComponents(Client c, ClusterService clusterService, ThreadPool threadPool,
                                               ResourceWatcherService resourceWatcherService,
                                               ScriptService scriptService, NamedXContentRegistry xContentRegistry,
                                               Environment environment, NodeEnvironment nodeEnvironment,
                                               NamedWriteableRegistry namedWriteableRegistry,
                                               IndexNameExpressionResolver indexNameExpressionResolver,
                                               Supplier<RepositoriesService> repositoriesServiceSupplier) {
        ClusterSettings cs = clusterService.getClusterSettings();
        RankerClient rc = client;
        cs.addSettingsUpdateConsumer(ENDPOINT, ENDPOINTS, (one, many) -> rc.setEndpoints(resolveEndpoints(one, many)));
        cs.addSettingsUpdateConsumer(CONNECT_TIMEOUT, rc::setConnectTimeout);
        cs.addSettingsUpdateConsumer(READ_TIMEOUT, rc::setReadTimeout);
        cs.addSettingsUpdateConsumer(BREAKER_FAILURE_THRESHOLD, rc::setFailureThreshold);
        cs.addSettingsUpdateConsumer(BREAKER_OPEN_DURATION, rc::setOpenDuration);
        return List.of();
    }

    @Override
    public List<RescorerSpec<?>> getRescorers() {
        return List.of(new RescorerSpec<>(DistilrankRescorerBuilder.NAME, DistilrankRescorerBuilder::new,
            DistilrankRescorerBuilder::fromXContent));
    }

    @Override
    public List<RestHandler> getRestHandlers(Settings settings, RestController restController,
                                             ClusterSettings clusterSettings, IndexScopedSettings indexScopedSettings,
                                             SettingsFilter settingsFilter,
                                             IndexNameExpressionResolver indexNameExpressionResolver,
                                             Supplier<DiscoveryNodes> nodesInCluster) {
        return List.of(new RestDistilrankStatsAction());
    }
}
